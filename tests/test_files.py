"""store/files.py: atomic writes (and what they leave behind when they fail), reading only
regular files, temporary-file cleanup, the writer lock and the crash tests' fault points."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from retrieval.errors import IndexBusy, StorageError, UnsafeIndexFile
from retrieval.store.files import (
    FaultPoints,
    WriterLock,
    atomic_write,
    describe_os_error,
    is_temp,
    open_regular,
    remove_stale_temps,
    temp_name,
)


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(b"old")
    atomic_write(str(path), lambda fh: fh.write(b"new"), "manifest")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_a_failed_atomic_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "vectors.faiss"
    path.write_bytes(b"old")

    def full_disk(fh) -> None:
        fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StorageError) as caught:
        atomic_write(str(path), full_disk, "vector index")
    assert str(caught.value) == (
        f"could not write vector index {path}: no space left on the device; free some space "
        "and run again"
    )
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["vectors.faiss"]


def test_an_interrupted_atomic_write_removes_its_temp(tmp_path: Path) -> None:
    """Not only OSError: Ctrl-C (or any exception) inside the write cleans up too."""
    path = tmp_path / "manifest.json"

    def interrupted(fh) -> None:
        fh.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), interrupted, "manifest")
    assert os.listdir(tmp_path) == []


def test_a_link_planted_at_the_temp_name_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    planted = tmp_path / ".manifest.json.tmp-planted"
    planted.symlink_to(victim)
    monkeypatch.setattr("retrieval.store.files.temp_name", lambda path: str(planted))
    with pytest.raises(StorageError, match="already exists"):
        atomic_write(str(tmp_path / "manifest.json"), lambda fh: fh.write(b"x"), "manifest")
    assert victim.read_bytes() == b"keep me"


def test_temp_names_are_recognised_and_removed(tmp_path: Path) -> None:
    temp = temp_name(str(tmp_path / "vectors.faiss"))
    assert is_temp(os.path.basename(temp)) and not is_temp("vectors.faiss")
    Path(temp).write_bytes(b"left by a killed run")
    (tmp_path / "vectors.faiss").write_bytes(b"kept")
    assert remove_stale_temps(str(tmp_path)) == [os.path.basename(temp)]
    assert os.listdir(tmp_path) == ["vectors.faiss"]


def test_open_regular_reads_a_file_and_refuses_anything_else(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_bytes(b"data")
    with open_regular(str(regular)) as fh:
        assert fh.read() == b"data"
    (tmp_path / "link").symlink_to(regular)
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")  # O_NONBLOCK: opening it must not wait for a writer
    for name, said in [
        ("link", "a symlink, not a regular file"),
        ("folder", "a directory, not a regular file"),
        ("fifo", "a FIFO, not a regular file"),
    ]:
        with pytest.raises(OSError) as caught:
            open_regular(str(tmp_path / name))
        assert (caught.value.errno, caught.value.strerror) == (errno.EINVAL, said)
    with pytest.raises(FileNotFoundError):
        open_regular(str(tmp_path / "missing"))


def test_describe_os_error_says_what_to_do() -> None:
    assert describe_os_error(OSError(errno.EROFS, "Read-only file system")) == (
        "permission denied or read-only file system; choose a writable --index"
    )
    assert describe_os_error(OSError(errno.EBADF, "Bad file descriptor")) == "Bad file descriptor"


def test_the_writer_lock_admits_one_holder(tmp_path: Path) -> None:
    path = str(tmp_path / "writer.lock")
    first, second = WriterLock(path), WriterLock(path)
    with first.held():
        with pytest.raises(IndexBusy) as caught:
            second.acquire()
        assert caught.value.holder.startswith(f"pid {os.getpid()} on ")
    second.acquire()  # released on leaving `held`
    second.release()


def test_a_lock_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not a lock")
    (tmp_path / "writer.lock").symlink_to(target)
    with pytest.raises(UnsafeIndexFile) as caught:
        WriterLock(str(tmp_path / "writer.lock")).acquire()
    assert str(caught.value) == (
        f"remove {tmp_path / 'writer.lock'}: it is a symlink, not a lock file"
    )
    assert target.read_bytes() == b"not a lock"


def test_fault_points_count_only_when_asked_to_stop() -> None:
    idle = FaultPoints(environ={})
    idle.reach("scanned")
    assert idle.reached("scanned") == 0
    armed = FaultPoints(environ={"RETRIEVAL_TEST_KILL_AT": "batch-committed:5"})
    for _ in range(3):
        armed.reach("batch-committed")
    armed.reach("scanned")
    assert (armed.reached("batch-committed"), armed.reached("scanned")) == (3, 1)


def test_a_fault_point_pauses_until_its_flag_is_deleted(tmp_path: Path) -> None:
    flag = tmp_path / "paused"
    points = FaultPoints(
        environ={"RETRIEVAL_TEST_PAUSE_AT": "txn-open:2", "RETRIEVAL_TEST_PAUSE_FILE": str(flag)}
    )
    points.reach("txn-open")  # the first reach passes
    assert not flag.exists()
    worker = threading.Thread(target=points.reach, args=("txn-open",), daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    while not (flag.exists() and flag.read_text()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert flag.read_text() == str(os.getpid())
    assert worker.is_alive()  # paused there
    flag.unlink()
    worker.join(timeout=10)
    assert not worker.is_alive()
