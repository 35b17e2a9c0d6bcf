"""Roots and re-indexing across them: a renamed root is a move (a copy is not), the roots an
index remembers are re-scanned by `retrieval index` with no path, a touched file is not
re-embedded, an empty folder says so, and folder prefixes never match a sibling's name."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import TINY, draw_image, make_photos, run_cli, save_image
from test_incremental import bump_mtime, counts, index, stored

from retrieval.sources.scan import supported_extensions

#: TINY without --quiet, for the tests that read notices on stderr.
LOUD = tuple(a for a in TINY if a != "--quiet")


def search_paths(directory: Path, query: Path, *extra: str) -> list[str]:
    result = run_cli("search", query, "--index", directory, "-k", "20", "--format", "paths", *extra)
    assert result.exit_code == 0, result.stderr
    return result.stdout.splitlines()


# -- moves across roots (issue item 3) ------------------------------------------------------------


def test_a_renamed_root_is_moved_not_added(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exif = tmp_path / "exif"
    make_photos(exif, [1, 2, 3, 4])
    directory = tmp_path / "index"
    assert counts(index(exif, directory)) == (4, 0, 0, 0, 0)
    before = stored(directory, tmp_path)
    exif2 = tmp_path / "exif2"
    exif.rename(exif2)
    from retrieval.embedding import embedder

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    with monkeypatch.context() as patched:  # moved files are decoded, never embedded
        patched.setattr(embedder, "load_embedder", refuse)
        report = index(exif2, directory)
    assert counts(report) == (0, 0, 0, 4, 0) and report["failed"] == []
    after = stored(directory, tmp_path)
    assert sorted(after) == sorted(p.replace(b"/exif/", b"/exif2/") for p in before)
    for path, (row_id, vector) in before.items():
        new = path.replace(b"/exif/", b"/exif2/")
        assert after[new][0] == row_id and np.array_equal(after[new][1], vector)
    found = search_paths(directory, exif2 / "photo_2.png")
    assert sorted(found) == sorted(os.fsdecode(p) for p in after)
    assert counts(index(exif2, directory)) == (0, 0, 4, 0, 0)


def test_a_renamed_root_whose_images_all_moved_is_forgotten(tmp_path: Path) -> None:
    """`mv exif exif2; retrieval index exif2` leaves nothing under exif: that run forgets it
    (with a notice), so a later `retrieval index` does not say its images stay."""
    exif = tmp_path / "exif"
    make_photos(exif, [1, 2])
    directory = tmp_path / "index"
    index(exif, directory)
    exif2 = tmp_path / "exif2"
    exif.rename(exif2)
    moved = run_cli("index", exif2, "--index", directory, *LOUD, "--json")
    assert counts(moved.json()) == (0, 0, 0, 2, 0)
    assert (
        f"retrieval: {exif} no longer exists and no indexed image is left under it: forgotten"
        in moved.stderr.splitlines()
    )
    result = run_cli("index", "--index", directory, *LOUD, "--json")
    assert result.exit_code == 0, result.stderr
    assert counts(result.json()) == (0, 0, 2, 0, 0)
    assert result.stderr == f"retrieval: re-scanning 1 remembered root(s): {exif2}\n"


def test_a_copied_root_is_added_and_the_original_kept(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, [1, 2])
    directory = tmp_path / "index"
    index(photos, directory)
    shutil.copytree(photos, tmp_path / "copy")
    assert counts(index(tmp_path / "copy", directory)) == (2, 0, 0, 0, 0)
    assert len(stored(directory, tmp_path)) == 4


def test_two_new_copies_of_one_vanished_file_are_one_move_and_one_add(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (original,) = make_photos(photos, [1])
    directory = tmp_path / "index"
    index(photos, directory)
    (row_id, vector) = stored(directory, tmp_path)[os.fsencode(original)]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy2(original, elsewhere / "a.jpg")
    shutil.copy2(original, elsewhere / "b.jpg")
    original.unlink()
    assert counts(index(elsewhere, directory)) == (1, 0, 0, 1, 0)
    after = stored(directory, tmp_path)
    assert os.fsencode(original) not in after and len(after) == 2
    assert row_id in {after[os.fsencode(elsewhere / n)][0] for n in ("a.jpg", "b.jpg")}


def test_moves_match_on_content_hash_not_size(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    old = save_image(draw_image(1), photos / "old.bmp")
    directory = tmp_path / "index"
    assert counts(index(photos, directory)) == (1, 0, 0, 0, 0)
    os.unlink(old)
    new = save_image(draw_image(2), photos / "new.bmp")  # another picture, the same byte size
    assert os.path.getsize(new) == os.path.getsize(photos / "new.bmp")
    report = index(photos, directory)
    assert counts(report) == (1, 0, 0, 0, 1)
    # across roots too: the vanished row is outside the scanned root
    other = tmp_path / "other"
    save_image(draw_image(3), other / "third.bmp")
    os.unlink(new)
    assert counts(index(other, directory)) == (1, 0, 0, 0, 0)
    assert set(stored(directory, tmp_path)) == {new, os.fsencode(other / "third.bmp")}


# -- touched files (issue item 5) ------------------------------------------------------------------


def test_a_touched_file_gets_its_stat_recorded_without_loading_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = tmp_path / "photos"
    paths = make_photos(photos, [1, 2, 3])
    directory = tmp_path / "index"
    index(photos, directory)
    before = stored(directory, tmp_path)
    from retrieval.embedding import embedder

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(embedder, "load_embedder", refuse)
    bump_mtime(paths[0])
    report = index(photos, directory)
    assert counts(report) == (0, 0, 3, 0, 0) and report["failed"] == []
    after = stored(directory, tmp_path)
    for path, (row_id, vector) in before.items():
        assert after[path][0] == row_id and np.array_equal(after[path][1], vector)
    out = tmp_path / "e.parquet"
    assert run_cli("export", "--index", directory, "-o", out).exit_code == 0
    table = pq.read_table(out).to_pydict()
    mtimes = dict(zip(table["path_bytes"], table["mtime_ns"], strict=True))
    assert mtimes[os.fsencode(paths[0])] == os.stat(paths[0]).st_mtime_ns


def test_same_size_new_content_and_new_mtime_is_reembedded(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    path = save_image(draw_image(1), photos / "a.bmp")
    save_image(draw_image(5), photos / "b.bmp")
    directory = tmp_path / "index"
    index(photos, directory)
    (row_id, vector) = stored(directory, tmp_path)[path]
    size = os.path.getsize(path)
    save_image(draw_image(2), path)
    assert os.path.getsize(path) == size
    bump_mtime(path)
    assert counts(index(photos, directory)) == (0, 1, 1, 0, 0)
    (new_id, new_vector) = stored(directory, tmp_path)[path]
    assert new_id == row_id and not np.allclose(new_vector, vector)


# -- empty folders (issue item 17) -----------------------------------------------------------------


def test_an_empty_folder_says_no_images_found(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("index", empty, "--index", tmp_path / "index", *LOUD)
    assert result.exit_code == 0
    assert f"retrieval: no images found in {empty}: it holds no files" in result.stderr.splitlines()
    assert result.stdout.startswith("0 added, 0 updated, 0 unchanged, 0 moved, 0 removed, 0 failed")


def test_a_folder_without_images_counts_what_it_skipped(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    for name in ("a.txt", "b.TXT", "sub/c.txt", "report.pdf", "README"):
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text("not an image")
    result = run_cli("index", docs, "--index", tmp_path / "index", *LOUD, "--json")
    assert result.exit_code == 0
    assert result.json()["added"] == 0
    notices = [line for line in result.stderr.splitlines() if "no images found" in line]
    indexed = " ".join(sorted(supported_extensions()))  # .avif/.heic where a decoder is
    assert notices == [
        f"retrieval: no images found in {docs} (skipped 5 files: .txt 3, .pdf 1, "
        f"no extension 1); indexed extensions: {indexed}"
    ]
    photos = tmp_path / "photos"
    make_photos(photos, [1])
    result = run_cli("index", photos, docs, "--index", tmp_path / "index", *LOUD, "--json")
    assert result.json()["added"] == 1
    assert sum("no images found" in line for line in result.stderr.splitlines()) == 1
    quiet = run_cli("index", docs, "--index", tmp_path / "index", *TINY)
    assert (quiet.exit_code, quiet.stderr) == (0, "")


# -- folder prefixes --------------------------------------------------------------------------


def test_a_sibling_with_a_longer_name_is_not_under_a_folder(tmp_path: Path) -> None:
    b = tmp_path / "a" / "b"
    bc = tmp_path / "a" / "bc"
    make_photos(b, [1, 2])
    (sibling,) = make_photos(bc, [3])
    directory = tmp_path / "index"
    index(b, directory)
    index(bc, directory)
    assert counts(index(b, directory)) == (0, 0, 2, 0, 0)
    assert os.fsencode(sibling) in stored(directory, tmp_path)
    found = search_paths(directory, sibling, "--under", str(b))
    assert sorted(found) == sorted(str(p) for p in b.iterdir())
    assert str(sibling) in search_paths(directory, sibling)


# -- remembered roots (issue item 4) ------------------------------------------------------------


def test_index_with_no_path_rescans_the_remembered_roots(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_photos(a, [1, 2])
    b_paths = make_photos(b, [3, 4])
    directory = tmp_path / "index"
    index(a, directory)
    index(b, directory)
    make_photos(a / "new", [5])
    b_paths[0].unlink()
    result = run_cli("index", "--index", directory, *LOUD, "--json")
    assert result.exit_code == 0, result.stderr
    assert counts(result.json()) == (1, 0, 3, 0, 1)
    assert f"retrieval: re-scanning 2 remembered root(s): {a}, {b}" in result.stderr.splitlines()


def test_a_vanished_root_is_skipped_and_its_rows_kept(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_photos(a, [1])
    make_photos(b, [2, 3])
    directory = tmp_path / "index"
    index(a, directory)
    index(b, directory)
    shutil.rmtree(b)  # an unplugged drive looks the same: nothing is dropped on its account
    result = run_cli("index", "--index", directory, *LOUD, "--json")
    assert result.exit_code == 0, result.stderr
    assert counts(result.json()) == (0, 0, 1, 0, 0)
    assert (
        f"retrieval: {b} no longer exists: skipped; its images stay in the index until "
        "`retrieval prune` drops them"
    ) in result.stderr.splitlines()
    assert len(stored(directory, tmp_path)) == 3
    shutil.rmtree(a)
    result = run_cli("index", "--index", directory, *TINY)
    assert result.exit_code == 1
    assert result.stderr == (
        "error: none of the 2 folder(s) this index remembers exists any more; `retrieval "
        "prune` forgets them and drops their images, or name a folder: `retrieval index "
        "FOLDER...`\n"
    )


def test_index_with_no_path_and_no_index(tmp_path: Path) -> None:
    result = run_cli("index", "--index", tmp_path / "index", *TINY)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: there is no index at {tmp_path / 'index'} yet, so no folders to re-scan; "
        "name them: `retrieval index FOLDER...`\n"
    )
    assert not (tmp_path / "index").exists()


def test_a_catalogue_from_before_roots_still_opens(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, [1, 2])
    directory = tmp_path / "index"
    index(photos, directory)
    with sqlite3.connect(directory / "catalog.sqlite") as db:  # as schema 1 made it
        db.execute("DROP TABLE roots")
    assert search_paths(directory, photos / "photo_1.jpg")
    assert run_cli("check", "--index", directory).exit_code == 0
    result = run_cli("index", "--index", directory, *TINY)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: the index at {directory} remembers no folders (it was built before folders "
        f"were recorded); name them once: `retrieval index --index {directory} FOLDER...`\n"
    )
    assert counts(index(photos, directory)) == (0, 0, 2, 0, 0)  # creates the table
    again = run_cli("index", "--index", directory, *TINY, "--json")
    assert counts(again.json()) == (0, 0, 2, 0, 0)


def test_an_excluded_file_that_still_exists_is_not_moved(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (original,) = make_photos(photos, [1])
    directory = tmp_path / "index"
    index(photos, directory)
    (row_id, _) = stored(directory, tmp_path)[os.fsencode(original)]
    shutil.copy2(original, photos / "copy.jpg")
    # Excluded, `original` leaves the index, but its file is still there: the copy is new.
    report = index(photos, directory, "--exclude", original.name)
    assert counts(report) == (1, 0, 0, 0, 1)
    assert stored(directory, tmp_path)[os.fsencode(photos / "copy.jpg")][0] != row_id
