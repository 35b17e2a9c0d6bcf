"""An index on read-only media (issue 9E.11): readable by every reading command, reported on
by `check`, refused in one line by every writing command.

The media is a read-only bind mount of a finished index (`mount --bind -o ro`, which needs
root and a mount namespace that allows it; skipped where it does not work). Root ignores
permission bits but not a read-only mount, so this is the real thing. The refusal itself is
also tested without a mount, by making `statvfs` report a read-only file system.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import _procs as P
import pytest
from _procs import one_cpu  # noqa: F401 - autouse fixture
from conftest import run_cli

N = 8


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    photos, index = P.built_index(tmp_path_factory.mktemp("readonly"), N)
    assert not (index / "catalog.sqlite-wal").exists()  # a finished index has no log
    return photos, index


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """mount(src) -> a read-only view of folder `src`; unmounted after the test."""
    mounted: list[Path] = []

    def mount(src: Path) -> Path:
        target = tmp_path / f"ro-{len(mounted)}"
        target.mkdir()
        done = subprocess.run(
            ["mount", "--bind", "-o", "ro", str(src), str(target)],
            capture_output=True,
            timeout=30,
        )
        if done.returncode != 0:
            pytest.skip(f"no read-only bind mount here: {done.stderr.decode().strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


def _copy(built: tuple[Path, Path], tmp_path: Path) -> Path:
    folder = tmp_path / "media" / "index"
    shutil.copytree(built[1], folder)
    return folder


def _message(index: Path) -> str:
    return (
        f"error: the index at {index} is on read-only media (or not writable); copy it to "
        "writable storage to change it\n"
    )


def _search(photos: Path, index: Path):
    return run_cli("search", photos / "img_0003.png", "--index", index, "--format", "json")


def test_reading_commands_work(built, tmp_path: Path, read_only):
    photos, pristine = built
    index = read_only(_copy(built, tmp_path).parent) / "index"
    result = _search(photos, index)
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.json() == _search(photos, pristine).json()
    info = run_cli("info", "--index", index, "--json")
    assert info.exit_code == 0, info.stderr
    assert info.json()["images"] == N
    out = tmp_path / "out.npy"
    exported = run_cli("export", "--index", index, "--format", "npy", "-o", out)
    assert exported.exit_code == 0, exported.stderr
    assert out.is_file()
    assert sorted(os.listdir(index)) == sorted(os.listdir(pristine))  # nothing written


def test_check_reports_without_repairing(built, tmp_path: Path, read_only):
    media = _copy(built, tmp_path)
    (media / "manifest.json").write_text("{}")
    index = read_only(media.parent) / "index"
    result = run_cli("check", "--index", index)
    assert result.exit_code == 1, result.stderr
    assert result.stderr == ""
    assert "  manifest.json: differs from the catalogue's manifest" in result.stdout
    repair = run_cli("check", "--index", index, "--repair")
    assert (repair.exit_code, repair.stdout, repair.stderr) == (1, "", _message(index))


def test_healthy_check_on_read_only_media(built, tmp_path: Path, read_only):
    index = read_only(_copy(built, tmp_path).parent) / "index"
    result = run_cli("check", "--index", index)
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.endswith("ok: no problems found\n")


@pytest.mark.parametrize("command", ["index", "import", "optimize", "repair"])
def test_writing_commands_refuse_in_one_line(built, tmp_path: Path, read_only, command: str):
    photos = built[0]
    index = read_only(_copy(built, tmp_path).parent) / "index"
    if command == "index":
        result = run_cli("index", photos, "--index", index, *P.FAST)
    elif command == "import":
        out = tmp_path / "e.parquet"
        assert run_cli("export", "--index", index, "-o", out).exit_code == 0
        result = run_cli("import", out, "--index", index)
    elif command == "optimize":
        result = run_cli("optimize", "--index", index)
    else:
        result = run_cli("check", "--index", index, "--repair")
    assert (result.exit_code, result.stderr) == (1, _message(index))


def test_stale_cache_is_rebuilt_in_memory_with_a_notice(built, tmp_path: Path, read_only):
    photos, pristine = built
    media = _copy(built, tmp_path)
    (media / "vectors.faiss").unlink()
    index = read_only(media.parent) / "index"
    result = _search(photos, index)
    assert result.exit_code == 0, result.stderr
    assert result.json() == _search(photos, pristine).json()
    assert result.stderr.splitlines()[-1] == (
        f"retrieval: searched an in-memory copy, not saved: {_message(index)[7:-1]}"
    )


def test_catalogue_copied_with_its_write_ahead_log(built, tmp_path: Path, read_only):
    """Copied while a reader kept the log alive: the -wal holds commits that immutable=1
    would not see; with its -shm beside it, they are read."""
    media = _copy(built, tmp_path)
    more = tmp_path / "more"
    P.make_images(more, 3, seed=9, start=500)
    keeper = sqlite3.connect(media / "catalog.sqlite")
    try:
        keeper.execute("SELECT count(*) FROM images").fetchall()
        assert run_cli("index", more, "--index", media, *P.FAST).exit_code == 0
        copied = tmp_path / "copied" / "index"
        shutil.copytree(media, copied)
    finally:
        keeper.close()
    assert (copied / "catalog.sqlite-wal").stat().st_size > 0
    index = read_only(copied.parent) / "index"
    info = run_cli("info", "--index", index, "--json")
    assert info.exit_code == 0, info.stderr
    assert info.json()["images"] == N + 3
    found = run_cli("search", more / "img_0501.png", "--index", index, "--format", "json")
    assert found.exit_code == 0, found.stderr
    assert found.json()[0]["results"][0]["path"] == str(more / "img_0501.png")


def test_refusal_without_a_mount(built, tmp_path: Path, monkeypatch):
    """Where no mount is possible: statvfs saying ST_RDONLY is enough to refuse writes."""
    index = _copy(built, tmp_path)
    statvfs_says_read_only(monkeypatch)
    result = run_cli("index", built[0], "--index", index, *P.FAST)
    assert (result.exit_code, result.stderr) == (1, _message(index))
    repair = run_cli("check", "--index", index, "--repair")
    assert (repair.exit_code, repair.stderr) == (1, _message(index))


def test_a_new_index_on_read_only_media_is_refused_before_the_model_loads(
    built, tmp_path: Path, monkeypatch
) -> None:
    """The refusal comes first: no seconds spent loading a model, nor its errors (an unknown
    model name would be reported instead of the real problem)."""
    from retrieval import Index, ReadOnlyIndex

    statvfs_says_read_only(monkeypatch)
    target = tmp_path / "new" / "index"
    with pytest.raises(ReadOnlyIndex):
        Index(target).add([built[0]], model="no_such_model")
    assert not target.exists()


def statvfs_says_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every file system look mounted read-only (ST_RDONLY), where no mount is possible."""
    real = os.statvfs

    class ReadOnly:
        def __init__(self, result: os.statvfs_result) -> None:
            self._result = result
            self.f_flag = result.f_flag | os.ST_RDONLY

        def __getattr__(self, name: str):
            return getattr(self._result, name)

    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly(real(path)))
