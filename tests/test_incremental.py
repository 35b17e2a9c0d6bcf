"""Incremental indexing: skip unchanged, update changed (same id), remove vanished, re-point
moved files without re-embedding, retry failures, and keep non-UTF-8 names intact."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import TINY, draw_image, make_photos, run_cli, save_image

COUNTS = ("added", "updated", "unchanged", "moved", "removed")


def index(photos: Path | bytes, directory: Path, *extra: str) -> dict:
    result = run_cli("index", photos, "--index", directory, *TINY, "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return result.json()


def counts(report: dict) -> tuple[int, ...]:
    return tuple(report[key] for key in COUNTS)


def stored(directory: Path, tmp_path: Path) -> dict[bytes, tuple[int, np.ndarray]]:
    """{raw path: (id, vector)} of every indexed image, through `retrieval export`."""
    out = tmp_path / "stored.npy"
    result = run_cli("export", "--index", directory, "--format", "npy", "-o", out)
    assert result.exit_code == 0, result.stderr
    matrix = np.load(out)
    rows = json.loads(out.with_suffix(".rows.json").read_text())["rows"]
    return {os.fsencode(r["path"]): (r["id"], matrix[i]) for i, r in enumerate(rows)}


def generation(directory: Path) -> int:
    return run_cli("info", "--index", directory, "--json").json()["generation"]


def bump_mtime(path: Path | bytes, seconds: int = 10) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


@pytest.fixture
def collection(tmp_path: Path):
    photos = tmp_path / "photos"
    paths = make_photos(photos, [1, 2, 3, 4])
    directory = tmp_path / "index"
    first = index(photos, directory)
    assert counts(first) == (4, 0, 0, 0, 0) and first["failed"] == []
    return photos, paths, directory


def test_second_run_skips_unchanged_files_unread(collection, tmp_path: Path) -> None:
    photos, paths, directory = collection
    before = stored(directory, tmp_path)
    gen = generation(directory)
    # New bytes under the old size and mtime: a skipped file is never read, so the stored
    # vector stays the old one (size + mtime is the contract).
    st = os.stat(paths[1])
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns))
    report = index(photos, directory)
    assert counts(report) == (0, 0, 4, 0, 0) and report["failed"] == []
    assert generation(directory) == gen  # nothing written at all
    after = stored(directory, tmp_path)
    assert after.keys() == before.keys()
    for path, (row_id, vector) in before.items():
        assert after[path][0] == row_id
        assert np.array_equal(after[path][1], vector)


def test_modified_file_is_updated_in_place(collection, tmp_path: Path) -> None:
    photos, paths, directory = collection
    before = stored(directory, tmp_path)
    save_image(draw_image(99), paths[0], quality=95)
    bump_mtime(paths[0])
    report = index(photos, directory)
    assert counts(report) == (0, 1, 3, 0, 0)
    after = stored(directory, tmp_path)
    key = os.fsencode(paths[0])
    assert after[key][0] == before[key][0]  # same id
    assert not np.allclose(after[key][1], before[key][1])
    found = run_cli("search", paths[0], "--index", directory, "-k", "1", "--format", "json")
    hit = found.json()[0]["results"][0]
    assert (hit["path"], hit["id"]) == (str(paths[0]), before[key][0])
    assert hit["score"] == pytest.approx(1.0, abs=1e-5)


def test_deleted_file_is_removed(collection, tmp_path: Path) -> None:
    photos, paths, directory = collection
    before = stored(directory, tmp_path)
    paths[2].unlink()
    report = index(photos, directory)
    assert counts(report) == (0, 0, 3, 0, 0 + 1)
    after = stored(directory, tmp_path)
    assert set(after) == set(before) - {os.fsencode(paths[2])}
    found = run_cli("search", paths[0], "--index", directory, "-k", "10", "--format", "paths")
    assert sorted(found.stdout.splitlines()) == sorted(str(p) for p in paths if p != paths[2])


def test_renamed_and_moved_files_keep_their_id_and_vector(collection, tmp_path: Path) -> None:
    photos, paths, directory = collection
    before = stored(directory, tmp_path)
    renamed = photos / "renamed.jpg"
    moved = photos / "deeper" / "folder" / paths[1].name
    paths[0].rename(renamed)
    moved.parent.mkdir(parents=True)
    shutil.move(paths[1], moved)
    report = index(photos, directory)
    assert counts(report) == (0, 0, 2, 2, 0) and report["failed"] == []
    after = stored(directory, tmp_path)
    for old, new in ((paths[0], renamed), (paths[1], moved)):
        row_id, vector = before[os.fsencode(old)]
        assert after[os.fsencode(new)][0] == row_id
        assert np.array_equal(after[os.fsencode(new)][1], vector)
        assert os.fsencode(old) not in after
    found = run_cli("search", renamed, "--index", directory, "-k", "1", "--format", "paths")
    assert found.stdout == f"{renamed}\n"
    assert counts(index(photos, directory)) == (0, 0, 4, 0, 0)


def test_other_roots_are_left_alone(collection, tmp_path: Path) -> None:
    photos, paths, directory = collection
    other = make_photos(tmp_path / "other", [7])
    assert counts(index(tmp_path / "other", directory)) == (1, 0, 0, 0, 0)
    # Indexing `photos` again must not remove what lies under `other`.
    assert counts(index(photos, directory)) == (0, 0, 4, 0, 0)
    assert os.fsencode(other[0]) in stored(directory, tmp_path)


def test_a_failed_file_is_retried_and_indexed_once_fixed(collection, tmp_path: Path) -> None:
    photos, paths, directory = collection
    broken = photos / "later.png"
    broken.write_bytes(b"not yet an image")
    report = index(photos, directory)
    assert counts(report) == (0, 0, 4, 0, 0)
    assert report["failed"] == [
        {"path": str(broken), "error": "not a supported image (unknown or corrupt header)"}
    ]
    assert counts(index(photos, directory)) == (0, 0, 4, 0, 0)  # still broken: still failed
    save_image(draw_image(42), broken)
    bump_mtime(broken)
    report = index(photos, directory)
    assert report["failed"] == []
    assert counts(report) == (1, 0, 4, 0, 0)  # new to search: added, not updated
    info = run_cli("info", "--index", directory, "--json").json()
    assert (info["images"], info["failed"]) == (5, 0)
    found = run_cli("search", broken, "--index", directory, "-k", "1", "--format", "paths")
    assert found.stdout == f"{broken}\n"


def test_non_utf8_names_are_indexed_searched_and_exported_losslessly(tmp_path: Path) -> None:
    photos = os.path.join(os.fsencode(tmp_path), b"ph\xf6tos")  # Latin-1 folder
    odd = os.path.join(photos, b"caf\xe9 \xff.png")
    plain = os.path.join(photos, b"plain.jpg")
    save_image(draw_image(5), odd)
    save_image(draw_image(6), plain)
    directory = tmp_path / "index"
    report = index(photos, directory)
    assert counts(report) == (2, 0, 0, 0, 0) and report["failed"] == []

    found = run_cli("search", odd, "--index", directory, "-k", "2", "--format", "json")
    assert found.exit_code == 0, found.stderr
    (result,) = found.json()
    assert os.fsencode(result["query"]) == odd
    assert [os.fsencode(h["path"]) for h in result["results"]] == [odd, plain]
    paths = run_cli("search", odd, "--index", directory, "-k", "2", "--format", "paths")
    assert paths.stdout_bytes == odd + b"\n" + plain + b"\n"  # raw bytes, usable by xargs
    table = run_cli("search", odd, "--index", directory, "-k", "1")
    shown = odd.decode("utf-8", "backslashreplace")  # for people: \xNN escapes
    assert table.stdout.splitlines() == [
        shown,
        f"    1   1.000  {shown}",
    ]
    rows = run_cli("search", odd, "--index", directory, "-k", "1", "--format", "csv").stdout
    assert rows.splitlines()[1] == f"{shown},1,1.000000,1,{shown},"

    assert set(stored(directory, tmp_path)) == {odd, plain}  # npy sidecar: lossless
    out = tmp_path / "e.parquet"
    assert run_cli("export", "--index", directory, "-o", out).exit_code == 0
    table = pq.read_table(out)
    assert sorted(table.column("path_bytes").to_pylist()) == sorted([odd, plain])
    assert odd.decode("utf-8", "backslashreplace") in table.column("path").to_pylist()

    os.rename(odd, odd + b".moved.png")
    assert counts(index(photos, directory)) == (0, 0, 1, 1, 0)
    assert odd + b".moved.png" in stored(directory, tmp_path)


def test_unchanged_run_never_loads_the_model(collection, monkeypatch) -> None:
    """An unchanged tree is a stat walk: a failing model loader is never reached, while a
    run with something new to embed does reach it (so the patch is the one in use)."""
    photos, _, directory = collection
    from retrieval.embedding import embedder

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(embedder, "load_embedder", refuse)
    (photos / "broken.jpg").write_bytes(b"not an image")  # failures are retried, unembedded
    report = index(photos, directory)
    assert counts(report) == (0, 0, 4, 0, 0)
    assert [f["error"] for f in report["failed"]] == [
        "not a supported image (unknown or corrupt header)"
    ]
    save_image(draw_image(9), photos / "new.png")
    result = run_cli("index", photos, "--index", directory, *TINY, "--json")
    assert result.exit_code == 1
    assert "the model was loaded" in result.stderr
