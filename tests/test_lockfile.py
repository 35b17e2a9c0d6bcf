"""A tampered index folder never makes retrieval write through it (security issue 11.1).

Anyone who can write into an index folder can plant `writer.lock` (or a temporary file name)
as a symlink to a file of the next user: it must be refused with one line naming the file,
never followed, truncated or created. A lock that is a folder, a FIFO or a hard link is
refused the same way. Root bypasses permissions, so these tests use links, not chmod.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import _procs as P
import pytest
from _procs import one_cpu  # noqa: F401 - autouse fixture
from conftest import run_cli

from retrieval.errors import StorageError, UnsafeIndexFile
from retrieval.store import files
from retrieval.store.index_dir import IndexDir

N = 6
VICTIM = b"precious data of the user who runs retrieval\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    photos, index = P.built_index(tmp_path_factory.mktemp("lockfile"), N)
    return photos, index


@pytest.fixture
def copy(built: tuple[Path, Path], tmp_path: Path) -> Path:
    return P.copy_index(built[1], tmp_path)


def _run(command: str, photos: Path, index: Path):
    if command == "index":
        return run_cli("index", photos, "--index", index, *P.FAST)
    if command == "search":
        return run_cli("search", photos / "img_0001.png", "--index", index, "--format", "json")
    return run_cli("check", "--index", index)


@pytest.mark.parametrize("command", ["index", "search", "check"])
def test_symlinked_lock_is_refused_and_its_target_untouched(
    built, copy: Path, tmp_path: Path, command: str
):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    lock = copy / "writer.lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(victim)
    (copy / "vectors.faiss").unlink()  # so that search must rebuild (and would save) the cache
    result = _run(command, built[0], copy)
    assert victim.read_bytes() == VICTIM
    assert lock.is_symlink()
    message = f"remove {lock}: it is a symlink, not a lock file"
    if command == "search":
        # Reading needs no lock: the rebuilt cache is used in memory and not saved.
        assert result.exit_code == 0, result.stderr
        assert len(result.json()[0]["results"]) == N
        assert result.stderr.splitlines()[-1] == (
            f"retrieval: searched an in-memory copy, not saved: {message}"
        )
        assert not (copy / "vectors.faiss").exists()
    else:
        assert (result.exit_code, result.stderr) == (1, f"error: {message}\n")


def test_dangling_lock_link_does_not_create_its_target(built, copy: Path, tmp_path: Path):
    target = tmp_path / "made-by-retrieval"
    (copy / "writer.lock").unlink(missing_ok=True)
    (copy / "writer.lock").symlink_to(target)
    result = _run("index", built[0], copy)
    assert result.exit_code == 1
    assert not target.exists() and not target.is_symlink()


@pytest.mark.parametrize("kind", ["a directory", "a FIFO", "a hard link to another file"])
def test_lock_that_is_not_a_plain_file_is_one_line(built, copy: Path, tmp_path: Path, kind: str):
    lock = copy / "writer.lock"
    lock.unlink(missing_ok=True)
    if kind == "a directory":
        lock.mkdir()
    elif kind == "a FIFO":
        os.mkfifo(lock)
    else:
        victim = tmp_path / "victim.txt"
        victim.write_bytes(VICTIM)
        os.link(victim, lock)
    for command in ("index", "check"):
        result = _run(command, built[0], copy)
        assert (result.exit_code, result.stderr) == (
            1,
            f"error: remove {lock}: it is {kind}, not a lock file\n",
        )
    if kind.startswith("a hard link"):
        assert (tmp_path / "victim.txt").read_bytes() == VICTIM


def test_temp_file_name_planted_as_a_link_is_not_followed(tmp_path: Path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    planted = tmp_path / ".manifest.json.tmp-1-1"
    planted.symlink_to(victim)
    monkeypatch.setattr(files, "temp_name", lambda path: str(planted))
    with pytest.raises(StorageError, match="already exists"):
        files.atomic_write(str(tmp_path / "manifest.json"), lambda fh: fh.write(b"{}"), "manifest")
    assert victim.read_bytes() == VICTIM
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize("name", ["manifest.json", "vectors.faiss"])
def test_derived_file_that_is_a_fifo_or_link_is_replaced_without_hanging(
    built, copy: Path, tmp_path: Path, name: str
):
    """Reading a FIFO planted as manifest.json or vectors.faiss would wait forever for a
    writer; a symlink would read (and trust) some other file. Both are rebuilt instead."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    (copy / name).unlink()
    os.mkfifo(copy / name)
    outcome: dict[str, object] = {}

    def search() -> None:
        with IndexDir.open(copy) as index_dir:
            with index_dir.catalog.read() as conn:
                _, xb = index_dir.catalog.all_vectors(conn, index_dir.require_manifest().dim)
            outcome["n"] = len(index_dir.search(xb[:1], 3)[0])
            outcome["notices"] = list(index_dir.notices)

    thread = threading.Thread(target=search, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():  # unblock it before failing
        fd = os.open(copy / name, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail(f"reading a FIFO {name} hung")
    assert outcome["n"] == 3
    assert any("a FIFO, not a regular file" in n for n in outcome["notices"])
    assert (copy / name).is_file() and not (copy / name).is_symlink()

    (copy / name).unlink()
    (copy / name).symlink_to(victim)
    result = run_cli("check", "--index", copy, "--repair")
    assert result.exit_code == 0, result.stderr
    assert victim.read_bytes() == VICTIM
    assert not (copy / name).is_symlink()


def test_unsafe_lock_from_the_library(copy: Path):
    (copy / "writer.lock").unlink(missing_ok=True)
    (copy / "writer.lock").mkdir()
    with pytest.raises(UnsafeIndexFile) as caught:
        IndexDir.open_writer(copy)
    assert caught.value.path == str(copy / "writer.lock")


@pytest.mark.parametrize("name", ["catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-journal"])
@pytest.mark.parametrize("command", ["index", "search", "check"])
def test_catalogue_files_planted_as_links_are_refused(
    built, copy: Path, tmp_path: Path, name: str, command: str
):
    """SQLite follows links when it opens its database, -wal and -journal: a planted link
    would let it write (or truncate) some other file of the user's."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"")  # SQLite would happily turn an empty file into a database
    path = copy / name
    if name == "catalog.sqlite":
        shutil.move(path, tmp_path / "real.sqlite")
    path.symlink_to(victim)
    result = _run(command, built[0], copy)
    assert (result.exit_code, result.stderr) == (
        1,
        f"error: remove {path}: it is a symlink, not a SQLite file\n",
    )
    assert victim.read_bytes() == b""


def test_catalogue_that_is_a_fifo_does_not_hang(built, copy: Path):
    (copy / "catalog.sqlite").unlink()
    os.mkfifo(copy / "catalog.sqlite")
    result = _run("search", built[0], copy)
    assert (result.exit_code, result.stderr) == (
        1,
        f"error: remove {copy / 'catalog.sqlite'}: it is a FIFO, not a SQLite file\n",
    )
