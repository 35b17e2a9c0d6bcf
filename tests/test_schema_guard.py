"""Schema objects retrieval did not create in catalog.sqlite (security issue 11.5).

A trigger added to the catalogue ran inside the next `index` (rewriting paths, deleting rows)
and `check` said ok. Now every open refuses a catalogue with a foreign trigger or view, in one
line that names it and the repair; `check` lists every foreign object (triggers, views,
tables, indexes) and `check --repair` drops them.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import _procs as P
import pytest
from _procs import one_cpu  # noqa: F401 - autouse fixture
from conftest import run_cli

from retrieval import Index
from retrieval.errors import CatalogTampered

N = 6

TRIGGER = """CREATE TRIGGER rewrite AFTER UPDATE ON meta BEGIN
    UPDATE images SET path = CAST('/tmp/evil/' || id AS BLOB);
    DELETE FROM images WHERE id = (SELECT min(id) FROM images);
END"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    photos, index = P.built_index(tmp_path_factory.mktemp("schema"), N)
    return photos, index


@pytest.fixture
def copy(built: tuple[Path, Path], tmp_path: Path) -> Path:
    return P.copy_index(built[1], tmp_path)


def _sql(index: Path, *statements: str) -> None:
    conn = sqlite3.connect(index / "catalog.sqlite")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def _schema(index: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(index / "catalog.sqlite")
    found = conn.execute("SELECT type, name FROM sqlite_master ORDER BY type, name").fetchall()
    conn.close()
    return found


def _refusal(index: Path, kind: str, name: str) -> str:
    return (
        f"error: the catalogue {index / 'catalog.sqlite'} holds a {kind} '{name}' that "
        f"retrieval did not create; run `retrieval check --repair --index {index}` to remove it\n"
    )


@pytest.mark.parametrize("command", ["index", "search", "info", "export"])
def test_trigger_is_refused_before_it_can_run(built, copy: Path, tmp_path: Path, command: str):
    photos = built[0]
    P.make_images(photos.parent / "more", 2, seed=5, start=300)
    _sql(copy, TRIGGER)
    before = P.rows(copy)
    if command == "index":
        result = run_cli("index", photos, photos.parent / "more", "--index", copy, *P.FAST)
    elif command == "search":
        result = run_cli("search", photos / "img_0001.png", "--index", copy)
    elif command == "info":
        result = run_cli("info", "--index", copy)
    else:
        result = run_cli("export", "--index", copy, "-o", tmp_path / "x.parquet")
    assert (result.exit_code, result.stderr) == (1, _refusal(copy, "trigger", "rewrite"))
    assert P.rows(copy) == before


def test_view_is_refused(copy: Path):
    _sql(copy, "CREATE VIEW peek AS SELECT path FROM images")
    with pytest.raises(CatalogTampered) as caught:
        Index(copy).info()
    assert (caught.value.kind, caught.value.name) == ("view", "peek")


def test_check_lists_every_foreign_object_and_repair_drops_them(built, copy: Path):
    ours = _schema(copy)
    _sql(
        copy,
        TRIGGER,
        "CREATE VIEW peek AS SELECT path FROM images",
        "CREATE TABLE notes (x)",
        "CREATE INDEX ix_extra ON images (size)",
    )
    result = run_cli("check", "--index", copy)
    assert (result.exit_code, result.stderr) == (1, "")
    assert result.stdout.splitlines()[1:-1] == [
        f"  catalog.sqlite: holds a {kind} '{name}' that retrieval did not create "
        "(--repair drops it)"
        for kind, name in [
            ("index", "ix_extra"),
            ("table", "notes"),
            ("trigger", "rewrite"),
            ("view", "peek"),
        ]
    ]
    before = P.rows(copy)
    repaired = run_cli("check", "--index", copy, "--repair")
    assert repaired.exit_code == 0, repaired.stdout + repaired.stderr
    assert _schema(copy) == ours
    assert P.rows(copy) == before
    result = run_cli("index", built[0], "--index", copy, *P.FAST, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["unchanged"] == N
    assert P.rows(copy) == before


def test_schema_functions_are_not_trusted(copy: Path):
    """trusted_schema=OFF: a view calling a function with side effects is not run by us."""
    catalog_path = copy / "catalog.sqlite"
    from retrieval.store.catalog import Catalog

    catalog = Catalog(str(catalog_path), writer=False, refuse_foreign=False)
    try:
        with catalog.read() as conn:
            assert conn.exec_driver_sql("PRAGMA trusted_schema").scalar() == 0
    finally:
        catalog.close()


# -- a manifest edited inside the catalogue (issue 11.10) --------------------------------------


def _edit_manifest(index: Path, **changes) -> None:
    conn = sqlite3.connect(index / "catalog.sqlite")
    raw = conn.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()[0]
    manifest = {**json.loads(raw), **changes}
    conn.execute("UPDATE meta SET value = ? WHERE key = 'manifest'", (json.dumps(manifest),))
    conn.commit()
    conn.close()


def _damaged(index: Path, reason: str) -> str:
    return (
        f"error: the catalogue {index / 'catalog.sqlite'} is damaged ({reason}); restore it "
        f"from a backup, or move the index away and rebuild it: "
        f"`retrieval index --index {index} FOLDER...`\n"
    )


@pytest.mark.parametrize("command", ["search", "index", "info", "export"])
def test_manifest_edited_in_the_catalogue_is_one_line(
    built, copy: Path, tmp_path: Path, command: str
):
    photos = built[0]
    _edit_manifest(copy, model="resnet18", dim=512)
    manifest_file = (copy / "manifest.json").read_bytes()
    before = P.rows(copy)
    if command == "search":
        result = run_cli("search", photos / "img_0001.png", "--index", copy)
    elif command == "index":
        P.make_images(tmp_path / "more", 2, seed=4, start=200)
        result = run_cli("index", photos, tmp_path / "more", "--index", copy, *P.FAST[2:])
    elif command == "info":
        result = run_cli("info", "--index", copy)
    else:
        result = run_cli("export", "--index", copy, "-o", tmp_path / "x.parquet")
    reason = "its stored vectors are 96-d but its manifest says 512-d float32 (resnet18)"
    assert (result.exit_code, result.stderr) == (1, _damaged(copy, reason))
    assert P.rows(copy) == before
    assert (copy / "manifest.json").read_bytes() == manifest_file  # not "repaired" from it


def test_check_reports_vectors_that_do_not_fit_the_manifest(copy: Path):
    _edit_manifest(copy, model="resnet18", dim=512)
    manifest_file = (copy / "manifest.json").read_bytes()
    line = (
        f"  catalog.sqlite: holds {N} vectors of 96 values but its manifest says 512-d float32 "
        "(resnet18) (--repair cannot fix this: restore the catalogue from a backup, or rebuild "
        "the index)"
    )
    for repair in ([], ["--repair"]):
        result = run_cli("check", "--index", copy, *repair)
        assert (result.exit_code, result.stderr) == (1, "")
        assert result.stdout.splitlines()[1:-1] == [line]
    assert (copy / "manifest.json").read_bytes() == manifest_file


def test_one_stored_vector_of_the_wrong_size(built, copy: Path):
    conn = sqlite3.connect(copy / "catalog.sqlite")
    last = "(SELECT max(id) FROM images)"
    conn.execute(f"UPDATE images SET vector = substr(vector, 1, 192) WHERE id = {last}")
    conn.commit()
    conn.close()
    (copy / "vectors.faiss").unlink()  # so that search rebuilds the cache from every vector
    result = run_cli("search", built[0] / "img_0001.png", "--index", copy)
    assert (result.exit_code, result.stderr) == (
        1,
        _damaged(copy, "its stored vectors are not 96-d as its manifest says"),
    )
    check = run_cli("check", "--index", copy)
    assert check.exit_code == 1
    assert check.stdout.splitlines()[1] == (
        "  catalog.sqlite: holds 1 vectors of 48 values but its manifest says 96-d float32 "
        "(test_resnet) (--repair cannot fix this: restore the catalogue from a backup, or "
        "rebuild the index)"
    )


def test_a_vector_of_another_size_is_never_stored(copy: Path):
    import numpy as np

    from retrieval.errors import IndexIncompatible
    from retrieval.store.catalog import NewRow
    from retrieval.store.index_dir import IndexDir

    before = P.rows(copy)
    with IndexDir.open_writer(copy) as index_dir:
        generation = index_dir.catalog.generation()
        row = NewRow(b"/x/new.png", 1, 1, b"h" * 32, 8, 8, "PNG", np.ones(2048, np.float32), None)
        with pytest.raises(IndexIncompatible, match="a 2048-d vector cannot be stored"):
            index_dir.catalog.store([row], {})
        with pytest.raises(IndexIncompatible):
            index_dir.catalog.store_many([row])
        assert index_dir.catalog.generation() == generation
    assert P.rows(copy) == before


# -- a row the schema refuses (issue 11.14, catalogue side) --------------------------------------


def test_a_row_without_a_path_is_not_called_damage(copy: Path):
    """A NULL path (an import row with a null path_bytes) is refused by the schema: the
    message says so; it used to say the catalogue was damaged."""
    import numpy as np

    from retrieval.errors import CatalogCorrupt, StorageError
    from retrieval.store.catalog import NewRow
    from retrieval.store.index_dir import IndexDir

    before = P.rows(copy)
    row = NewRow(None, 1, 1, None, None, None, None, np.ones(96, np.float32), None)
    with IndexDir.open_writer(copy) as index_dir:
        with pytest.raises(StorageError) as caught:
            index_dir.catalog.store_many([row])
    assert not isinstance(caught.value, CatalogCorrupt)
    assert str(caught.value) == (
        f"could not write the catalogue {copy / 'catalog.sqlite'}: a row was refused "
        "(NOT NULL constraint failed: images.path); nothing from this batch was stored"
    )
    assert P.rows(copy) == before
    assert run_cli("check", "--index", copy).exit_code == 0
