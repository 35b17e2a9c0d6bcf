"""A copied index folder whose collection lives outside it (a Milvus server, or a Lite file
given as its own path) would share its original's collection (same catalogue id, so the same
collection name, at the same URI). The copy is refused, reading or writing, with one line
that says what to do; the original keeps working; a moved index, or a copy whose original is
gone, takes the collection over; of two copies that cannot see each other (another machine),
the first to write keeps it. Each test runs on a Lite file outside the index and on the
session's Milvus server (`milvus_server`; skipped without PyPI's `milvus` package).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import TINY, make_photos, run_cli

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


@pytest.fixture(autouse=True, scope="module")
def _nothing_left_running():
    yield
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()


@pytest.fixture(params=["lite-file", "server"])
def shared(request, tmp_path: Path) -> tuple[Path, list[Path], Path, str]:
    """(photos, the indexed photos, index dir, --vectors) of an index whose collection is
    outside its folder."""
    if request.param == "server":
        vectors = f"milvus:{request.getfixturevalue('milvus_server')}"
    else:
        (tmp_path / "vectors").mkdir()
        vectors = f"milvus:{tmp_path / 'vectors' / 'v.db'}"
    photos = tmp_path / "photos"
    originals = make_photos(photos, range(4))
    directory = tmp_path / "original"
    result = run_cli("index", photos, "--index", directory, *TINY, "--vectors", vectors)
    assert result.exit_code == 0, result.stderr
    return photos, originals, directory, vectors


def search_paths(directory: Path, query: Path) -> list[str]:
    result = run_cli("search", query, "--index", directory, "--format", "json", "-k", "10")
    assert result.exit_code == 0, result.stderr
    return [Path(h["path"]).name for h in result.json()[0]["results"]]


def generation(directory: Path) -> int:
    from retrieval.store.catalog import Catalog

    catalog = Catalog(str(directory / "catalog.sqlite"), writer=False)
    try:
        return catalog.generation()
    finally:
        catalog.close()


def refused(result, copy: Path, reason: str, vectors: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert f"the index at {copy} cannot use the Milvus collection retrieval_" in lines[0]
    assert reason in lines[0], lines[0]
    assert f"`retrieval export --index {copy} -o FILE.parquet`" in lines[0]
    assert f"`retrieval import FILE.parquet --index NEW_DIR --vectors {vectors}`" in lines[0]


def test_a_copy_is_refused_and_the_original_keeps_working(shared, tmp_path: Path) -> None:
    photos, originals, directory, vectors = shared
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    (added,) = make_photos(photos, [9])
    before = generation(copy)
    reason = f"it is a copy of the index at {directory}"
    for command in (("search", originals[0]), ("index", photos, *TINY), ("check",)):
        refused(run_cli(*command, "--index", copy), copy, reason, vectors)
    assert generation(copy) == before  # refused before embedding anything
    # the original: the new photo is indexed and found; check passes
    result = run_cli("index", photos, "--index", directory, *TINY)
    assert result.exit_code == 0, result.stderr
    assert search_paths(directory, added)[0] == added.name
    assert run_cli("check", "--index", directory).exit_code == 0
    # the original through a symlink is the original, not a copy
    link = tmp_path / "link"
    link.symlink_to(directory)
    assert run_cli("index", photos, "--index", link, *TINY).exit_code == 0
    assert search_paths(directory, added)[0] == added.name
    refused(run_cli("search", originals[0], "--index", copy), copy, reason, vectors)
    # what the error says to do works: export the copy, import it as an index of its own
    out = tmp_path / "copy.parquet"
    result = run_cli("export", "--index", copy, "-o", out)
    assert result.exit_code == 0, result.stderr
    own = tmp_path / "own"
    result = run_cli("import", out, "--index", own, "--vectors", vectors)
    assert result.exit_code == 0, result.stderr
    assert sorted(search_paths(own, originals[1])) == sorted(p.name for p in originals)
    assert len(search_paths(directory, originals[1])) == 5  # the original is untouched


def test_a_moved_index_and_a_copy_whose_original_is_gone_take_the_collection_over(
    shared, tmp_path: Path
) -> None:
    photos, originals, directory, vectors = shared
    moved = tmp_path / "moved"
    directory.rename(moved)
    assert search_paths(moved, originals[0])[0] == originals[0].name
    (added,) = make_photos(photos, [9])
    assert run_cli("index", photos, "--index", moved, *TINY).exit_code == 0
    assert search_paths(moved, added)[0] == added.name
    # a copy, then the original removed: the copy is the index now
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    reason = "it is a copy of the index at"
    refused(run_cli("search", added, "--index", copy), copy, reason, vectors)
    shutil.rmtree(moved)
    assert search_paths(copy, added)[0] == added.name
    assert run_cli("check", "--index", copy).exit_code == 0


def test_of_two_copies_that_cannot_see_each_other_the_first_to_write_keeps_it(
    shared, tmp_path: Path
) -> None:
    """A copy, then the original moved: neither finds the other at the recorded path (as
    with a copy on another machine); the first to write keeps the collection."""
    photos, originals, directory, vectors = shared
    copy, moved = tmp_path / "copy", tmp_path / "moved"
    shutil.copytree(directory, copy)
    directory.rename(moved)
    (added,) = make_photos(photos, [9])
    assert run_cli("index", photos, "--index", copy, *TINY).exit_code == 0
    assert search_paths(copy, added)[0] == added.name
    # the copy out of sight too (another machine): only the token tells
    elsewhere = tmp_path / "elsewhere"
    copy.rename(elsewhere)
    reason = f"another copy of it ({copy}) has written the collection since"
    for command in (("search", originals[0]), ("index", photos, *TINY), ("check",)):
        refused(run_cli(*command, "--index", moved), moved, reason, vectors)
    assert search_paths(elsewhere, added)[0] == added.name
    assert run_cli("check", "--index", elsewhere).exit_code == 0


def test_a_folder_behind_its_collection_is_told_so(tmp_path: Path) -> None:
    """The recorded owner is this folder, but the collection's token is not one its catalogue
    wrote: the folder was restored from a backup (or copied at the same path elsewhere)."""
    from retrieval.store import milvus_owner as owner

    here = str(tmp_path)
    properties = {owner.OWNER: owner.encode(here), owner.TOKEN: "b2"}
    assert owner.refusal(properties, here, "id", ["b2", "a1"]) is None
    assert owner.refusal(properties, here, "id", ["a1"]).startswith(
        "the collection was written after this folder's catalogue (was the folder restored"
    )
    # a collection made before owners were recorded: accepted (claimed at its next write)
    assert owner.refusal({}, here, "id", []) is None
    gone = str(tmp_path / "gone")
    assert owner.refusal({owner.OWNER: owner.encode(gone)}, here, "id", []) is None
