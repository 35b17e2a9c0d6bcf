"""`retrieval prune` and `check`'s missing-files warning: rows whose files were deleted outside
any re-scanned root, and roots that are gone, leave the index only through prune, under the
writer lock, with the vector cache kept equal to the catalogue."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import TINY, make_photos, run_cli
from test_incremental import counts, index, stored

from retrieval import Index
from retrieval.store import vectors
from retrieval.store.files import WriterLock


def search_paths(directory: Path, query: Path) -> list[str]:
    result = run_cli("search", query, "--index", directory, "-k", "20", "--format", "paths")
    assert result.exit_code == 0, result.stderr
    return sorted(result.stdout.splitlines())


@pytest.fixture
def two_roots(tmp_path: Path) -> tuple[Path, Path, list[Path], list[Path], Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    a_paths = make_photos(a, [1, 2, 3])
    b_paths = make_photos(b, [4, 5])
    directory = tmp_path / "index"
    assert counts(index(a, directory)) == (3, 0, 0, 0, 0)
    assert counts(index(b, directory)) == (2, 0, 0, 0, 0)
    return a, b, a_paths, b_paths, directory


def test_check_warns_of_missing_files_and_prune_removes_them(two_roots, tmp_path: Path) -> None:
    a, b, a_paths, b_paths, directory = two_roots
    a_paths[1].unlink()
    shutil.rmtree(b)
    gone = [a_paths[1], *b_paths]  # in id order: a was indexed first

    result = run_cli("check", "--index", directory)
    assert result.exit_code == 0  # a warning, not damage
    assert result.stdout.splitlines()[1:] == [
        f"warning: 3 indexed file(s) no longer exist ({', '.join(map(str, gone))}); "
        f"`retrieval prune --index {directory}` removes them from the index",
        "ok: no problems found",
    ]
    report = run_cli("check", "--index", directory, "--json").json()
    assert (report["ok"], report["missing_files"]) == (
        True,
        {"count": 3, "examples": [str(p) for p in gone]},
    )

    before = stored(directory, tmp_path)
    generation = Index(directory).info()["generation"]
    dry = run_cli("prune", "--index", directory, "--dry-run")
    assert (dry.exit_code, dry.stderr) == (0, "")
    assert dry.stdout.splitlines() == [
        "would remove 3 indexed image(s) whose files no longer exist",
        *(f"  {p}" for p in gone),
        f"would forget 1 root(s): {b}",
        "nothing was changed; run without --dry-run to prune",
    ]
    assert stored(directory, tmp_path).keys() == before.keys()
    assert Index(directory).info()["generation"] == generation

    done = run_cli("prune", "--index", directory, "--json")
    assert done.exit_code == 0, done.stderr
    assert done.json() == {
        "dry_run": False,
        "removed": 3,
        "paths": [str(p) for p in gone],
        "forgotten_roots": [str(b)],
    }
    kept = {os.fsencode(p) for p in a_paths if p.exists()}
    assert stored(directory, tmp_path).keys() == kept
    assert search_paths(directory, a_paths[0]) == sorted(os.fsdecode(p) for p in kept)
    # the cache was brought up to date under the lock, not left for the next reader
    cache = vectors.read(str(directory / "vectors.faiss"))
    assert cache.generation == Index(directory).info()["generation"]
    clean = run_cli("check", "--index", directory, "--json").json()
    assert (clean["ok"], clean["problems"], clean["missing_files"]["count"]) == (True, [], 0)
    again = run_cli("prune", "--index", directory)
    assert again.stdout == "nothing to prune: every indexed file and remembered root is on disk\n"
    rescan = run_cli("index", "--index", directory, *TINY, "--json")
    assert counts(rescan.json()) == (0, 0, 2, 0, 0)  # only a is remembered now


def test_prune_root_forgets_it_and_drops_its_rows(two_roots, tmp_path: Path) -> None:
    a, b, a_paths, b_paths, directory = two_roots
    result = run_cli("prune", "--index", directory, "--root", b)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"removed 2 indexed image(s) under the forgotten root(s)\nforgot 1 root(s): {b}\n"
    )
    assert stored(directory, tmp_path).keys() == {os.fsencode(p) for p in a_paths}
    assert all(p.exists() for p in b_paths)  # files are never touched
    rescan = run_cli("index", "--index", directory, *TINY, "--json")
    assert counts(rescan.json()) == (0, 0, 3, 0, 0)
    assert Index(directory).check().ok


def test_prune_root_that_is_not_known(two_roots, tmp_path: Path) -> None:
    a, b, _, _, directory = two_roots
    result = run_cli("prune", "--index", directory, "--root", tmp_path / "elsewhere")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: {tmp_path / 'elsewhere'} is not a root this index remembers and no indexed "
        f"image lies under it; the remembered roots are: {a}, {b}\n"
    )


def test_prune_takes_the_writer_lock(two_roots) -> None:
    _, _, a_paths, _, directory = two_roots
    a_paths[0].unlink()
    lock = WriterLock(str(directory / "writer.lock"))
    lock.acquire()
    try:
        result = run_cli("prune", "--index", directory)
        assert result.exit_code == 1
        holder = (directory / "writer.lock").read_text()
        assert result.stderr == (
            f"error: another retrieval process ({holder}) is writing to {directory}; wait for "
            "it to finish, or pass --wait to queue behind it\n"
        )
        assert run_cli("prune", "--index", directory, "--dry-run").exit_code == 0  # no lock
        threading.Timer(0.3, lock.release).start()
        result = run_cli("prune", "--index", directory, "--wait", "--json")
        assert (result.exit_code, result.json()["removed"]) == (0, 1)
    finally:
        lock.release()


def test_prune_without_an_index(tmp_path: Path) -> None:
    result = run_cli("prune", "--index", tmp_path / "nothing")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: no index at {tmp_path / 'nothing'}: build one with "
        f"`retrieval index --index {tmp_path / 'nothing'} FOLDER`\n"
    )
    assert not (tmp_path / "nothing").exists()


def test_library_prune(two_roots) -> None:
    _, b, _, b_paths, directory = two_roots
    b_paths[0].unlink()
    report = Index(directory).prune(dry_run=True)
    assert (report.removed, report.forgotten) == ([os.fsencode(b_paths[0])], [])
    report = Index(directory).prune([b])
    assert sorted(report.removed) == sorted(os.fsencode(p) for p in b_paths)
    assert report.forgotten == [os.fsencode(b)]
    assert json.loads(json.dumps(report.to_dict()))["removed"] == 2


def test_prune_root_that_is_a_file_drops_its_row(two_roots, tmp_path: Path) -> None:
    """A file given to `index` is a root too: prune --root FILE removes that file's row."""
    a, b, a_paths, b_paths, directory = two_roots
    single = make_photos(tmp_path / "c", [6])[0]
    assert counts(index(single, directory)) == (1, 0, 0, 0, 0)
    report = Index(directory).prune([os.fsencode(single)])
    assert (report.removed, report.forgotten) == ([os.fsencode(single)], [os.fsencode(single)])
    assert stored(directory, tmp_path).keys() == {os.fsencode(p) for p in a_paths + b_paths}


def test_prune_root_without_rows_is_forgotten(two_roots, tmp_path: Path) -> None:
    """A remembered root that holds no indexed image (an empty folder) can be forgotten."""
    a, b, a_paths, b_paths, directory = two_roots
    (tmp_path / "empty").mkdir()
    index(tmp_path / "empty", directory)
    report = Index(directory).prune([os.fsencode(tmp_path / "empty")])
    assert (report.removed, report.forgotten) == ([], [os.fsencode(tmp_path / "empty")])
    assert len(stored(directory, tmp_path)) == len(a_paths + b_paths)
