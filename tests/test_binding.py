"""vectors.faiss is bound to its own catalogue (issue 11.11).

A sound, checksummed cache copied from another index with the same ids and generation used to
be trusted: searches returned the other index's neighbours under this index's paths, and only
`check` noticed. The catalogue now has a random id (set when it is created, or on the first
writable open of an older one), the cache's header carries it, and a cache with another id is
stale: rebuilt from the catalogue with a notice.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import _procs as P
import pytest
from _procs import one_cpu  # noqa: F401 - autouse fixture
from conftest import run_cli

from retrieval.store import vectors

N = 8


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(photos of A, index A, index B): B holds other pictures under the same ids."""
    root = tmp_path_factory.mktemp("binding")
    P.make_images(root / "a", N, seed=1)
    P.make_images(root / "b", N, seed=2)
    for name in ("a", "b"):
        result = run_cli("index", root / name, "--index", root / f"index-{name}", *P.FAST)
        assert result.exit_code == 0, result.stderr
    return root / "a", root / "index-a", root / "index-b"


def _search(photos: Path, index: Path):
    return run_cli("search", photos / "img_0002.png", "--index", index, "--format", "json")


def test_foreign_cache_with_same_ids_and_generation_is_rebuilt(two, tmp_path: Path):
    photos, pristine, other = two
    copy = tmp_path / "index"
    shutil.copytree(pristine, copy)
    ours = vectors.read(str(copy / "vectors.faiss"))
    theirs = vectors.read(str(other / "vectors.faiss"))
    assert ours.generation == theirs.generation
    assert (vectors.stored_ids(ours.index) == vectors.stored_ids(theirs.index)).all()
    assert ours.catalog_id and ours.catalog_id != theirs.catalog_id
    shutil.copyfile(other / "vectors.faiss", copy / "vectors.faiss")

    check = run_cli("check", "--index", copy)
    assert check.exit_code == 1
    assert (
        "  vectors.faiss: was built from another catalogue (its catalogue id differs) "
        "(--repair rebuilds it from the catalogue)"
    ) in check.stdout.splitlines()

    result = _search(photos, copy)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"retrieval: {copy / 'vectors.faiss'} could not be used (it was built from another "
        f"catalogue); rebuilt it from the catalogue ({N} vectors)"
    )
    assert result.json() == _search(photos, pristine).json()
    again = _search(photos, copy)
    assert (again.exit_code, again.stderr) == (0, "")
    assert vectors.read(str(copy / "vectors.faiss")).catalog_id == ours.catalog_id


def test_catalogue_without_an_id_gets_one_on_its_first_writable_open(two, tmp_path: Path):
    photos, pristine, _ = two
    copy = tmp_path / "index"
    shutil.copytree(pristine, copy)
    conn = sqlite3.connect(copy / "catalog.sqlite")
    conn.execute("DELETE FROM meta WHERE key = 'catalog_id'")
    conn.commit()
    conn.close()
    old = vectors.read(str(copy / "vectors.faiss"))
    vectors.write(str(copy / "vectors.faiss"), old)  # as written before ids existed

    # Reading needs no id and writes none.
    result = _search(photos, copy)
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.json() == _search(photos, pristine).json()
    assert _meta(copy, "catalog_id") is None

    # The first writer gives it one; the old cache is then rebuilt once, with a notice.
    indexed = run_cli("index", photos, "--index", copy, *P.FAST, "--json")
    assert indexed.exit_code == 0, indexed.stderr
    new_id = _meta(copy, "catalog_id")
    assert new_id and len(new_id) == 32
    assert vectors.read(str(copy / "vectors.faiss")).catalog_id == new_id
    check = run_cli("check", "--index", copy)
    assert check.exit_code == 0, check.stdout


def test_each_new_index_gets_its_own_id(two):
    _, a, b = two
    assert _meta(a, "catalog_id") != _meta(b, "catalog_id")
    assert vectors.read(str(a / "vectors.faiss")).catalog_id == _meta(a, "catalog_id")


def test_format_2_files_are_still_read(tmp_path: Path):
    """A cache written before the catalogue id (format 2) reads back with no id."""
    import hashlib
    import struct

    import numpy as np

    xb = np.eye(4, dtype=np.float32)
    index = vectors.build(xb, np.arange(1, 5, dtype=np.int64))
    path = tmp_path / "v.faiss"
    vectors.write(str(path), index, 7)
    data = path.read_bytes()
    header = struct.Struct("<8sIQQQ32s16s")
    magic, _, generation, size, n_tomb, _, _ = header.unpack_from(data)
    body = data[header.size :]
    seal = hashlib.sha256(
        struct.pack("<QQQ", generation, size, n_tomb) + hashlib.sha256(body).digest()
    ).digest()
    path.write_bytes(struct.pack("<8sIQQQ32s", magic, 2, generation, size, n_tomb, seal) + body)
    built = vectors.read(str(path))
    assert (built.generation, built.catalog_id, vectors.count(built.index)) == (7, "", 4)


def _meta(index: Path, key: str) -> str | None:
    conn = sqlite3.connect(index / "catalog.sqlite")
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    conn.close()
    return row[0] if row else None
