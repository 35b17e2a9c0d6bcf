"""store/index_dir.py with its vector cache and searcher: opening and the writer lock, the
manifest mirror and its repair, the cache rebuilt when damaged, and searches that equal exact
numpy search over the catalogue, changed rows not yet in the cache included."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from retrieval.errors import IndexBusy, IndexNotFound, ReadOnlyIndex
from retrieval.specs import ModelInfo, Preprocess, WeightsSpec
from retrieval.store.catalog import NewRow
from retrieval.store.index_dir import IndexDir
from retrieval.store.manifest import Manifest
from retrieval.store.searcher import exact_search, merge_topk

D = 16


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def manifest() -> Manifest:
    preprocess = Preprocess(8, 8, 8, "bilinear", (0.5,) * 3, (0.5,) * 3)
    model = ModelInfo("fake", WeightsSpec("untrained", identity="0"), preprocess, D)
    return Manifest(model=model, precision="fp32")


def rows(xb: np.ndarray, start: int = 0) -> list[NewRow]:
    return [
        NewRow(f"/p/{start + i:05d}.png".encode(), 1, 1, b"h", 8, 8, "PNG", v, None)
        for i, v in enumerate(xb)
    ]


@pytest.fixture
def index(tmp_path: Path) -> Path:
    """An index of 200 seeded vectors, its cache written."""
    with IndexDir.open_writer(tmp_path) as index_dir:
        index_dir.set_manifest(manifest())
        index_dir.catalog.store(rows(unit(200, seed=1)))
        index_dir.sync_vectors()
    return tmp_path


def numpy_topk(index_dir: IndexDir, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over what the catalogue holds now: (scores, ids), best first."""
    with index_dir.catalog.read() as conn:
        ids, xb = index_dir.catalog.all_vectors(conn, D)
    scores = xq @ xb.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


# -- opening and the lock ----------------------------------------------------------------------


def test_open_refuses_a_folder_without_an_index(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFound):
        IndexDir.open(tmp_path)
    with pytest.raises(IndexNotFound):
        IndexDir.open_for_check(tmp_path)


def test_open_writer_refuses_a_second_writer(index: Path) -> None:
    with IndexDir.open_writer(index):
        with pytest.raises(IndexBusy) as caught:
            IndexDir.open_writer(index)
        assert str(caught.value).startswith(f"another retrieval process (pid {os.getpid()} on ")
        with IndexDir.open(index) as reader:  # readers take no lock
            assert reader.lock is None
    with IndexDir.open_writer(index) as again:  # released on close
        assert again.lock is not None


def test_open_for_check_holds_the_lock_while_open(index: Path) -> None:
    with IndexDir.open_for_check(index, repair=True) as checking:
        assert checking.lock is not None
        with pytest.raises(IndexBusy):
            IndexDir.open_writer(index)
    IndexDir.open_writer(index).close()


def test_open_for_check_refuses_repair_on_read_only_media(
    index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("retrieval.store.index_dir.read_only_media", lambda directory: True)
    with IndexDir.open_for_check(index) as checking:  # looking is fine, without the lock
        assert checking.lock is None
    with pytest.raises(ReadOnlyIndex):
        IndexDir.open_for_check(index, repair=True)


# -- the manifest mirror -------------------------------------------------------------------------


def test_a_changed_or_missing_mirror_is_rewritten_on_open(index: Path) -> None:
    mirror = index / "manifest.json"
    expected = manifest().to_json()
    assert mirror.read_text() == expected
    mirror.write_text("{}")
    with IndexDir.open(index) as index_dir:
        assert index_dir.notices == [
            f"{mirror} did not match the catalogue; rewrote it from the catalogue"
        ]
    assert mirror.read_text() == expected
    mirror.unlink()
    with IndexDir.open(index) as index_dir:
        assert index_dir.notices == [f"{mirror} was missing; rewrote it from the catalogue"]
    assert mirror.read_text() == expected


def test_manifest_file_problem_names_each_state(index: Path) -> None:
    mirror = index / "manifest.json"
    with IndexDir.open_for_check(index) as index_dir:
        assert index_dir.manifest_file_problem() is None
        mirror.write_bytes(b"\xff\xfe")
        assert index_dir.manifest_file_problem() == "unreadable"
        mirror.write_text("{}")
        assert index_dir.manifest_file_problem() == "differs"
        mirror.unlink()
        assert index_dir.manifest_file_problem() == "missing"
        mirror.mkdir()
        assert index_dir.manifest_file_problem() == "unreadable (a directory, not a regular file)"
        mirror.rmdir()
        index_dir.write_manifest_file()
        assert index_dir.manifest_file_problem() is None


# -- the vector cache ------------------------------------------------------------------------------


def test_a_damaged_cache_is_rebuilt_with_a_notice(index: Path) -> None:
    cache = index / "vectors.faiss"
    data = bytearray(cache.read_bytes())
    data[-1] ^= 0xFF
    cache.write_bytes(bytes(data))
    xq = unit(5, seed=9)
    with IndexDir.open(index) as index_dir:
        found = index_dir.search(xq, 10)
        assert index_dir.notices == [
            f"{cache} could not be used (checksum mismatch (corrupted bytes)); rebuilt it "
            "from the catalogue (200 vectors)"
        ]
        D_ref, I_ref = numpy_topk(index_dir, xq, 10)
    assert [[n.id for n in row] for row in found] == I_ref.tolist()
    with IndexDir.open(index) as index_dir:  # the rebuilt file was saved
        assert index_dir.cache.read_file().generation == index_dir.catalog.generation()


def test_search_equals_numpy_with_changes_not_yet_in_the_cache(index: Path) -> None:
    """Rows stored and removed after the cache was written are searched from the catalogue."""
    xq = unit(8, seed=5)
    with IndexDir.open_writer(index) as index_dir:
        index_dir.catalog.store(rows(unit(30, seed=2), start=500))
        index_dir.catalog.remove([1, 2, 3, 50])
        cached_at = index_dir.cache.read_file().generation
        assert cached_at < index_dir.catalog.generation()  # not synced
        found = index_dir.search(xq, 12)
        D_ref, I_ref = numpy_topk(index_dir, xq, 12)
    assert [[n.id for n in row] for row in found] == I_ref.tolist()
    scores = np.array([[n.score for n in row] for row in found])
    np.testing.assert_allclose(scores, D_ref, rtol=0, atol=1e-5)
    assert found[0][0].path.startswith(b"/p/")


def test_search_with_allow_keeps_to_the_allowed_ids(index: Path) -> None:
    xq = unit(3, seed=6)
    allow = np.arange(10, 40, dtype=np.int64)
    with IndexDir.open(index) as index_dir:
        found = index_dir.search(xq, 5, allow=allow)
    assert all(n.id in set(allow.tolist()) for row in found for n in row)
    assert [len(row) for row in found] == [5, 5, 5]


# -- the searcher's exact pieces ---------------------------------------------------------------


def test_exact_search_and_merge_topk_equal_numpy() -> None:
    xb, xq = unit(50, seed=3), unit(4, seed=4)
    ids = np.arange(1000, 1050, dtype=np.int64)
    D1, I1 = exact_search(xb[:30], ids[:30], xq, 7)
    D2, I2 = exact_search(xb[30:], ids[30:], xq, 7)
    D, I = merge_topk(D1, I1, D2, I2)
    scores = xq @ xb.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(I, ids[order])
    np.testing.assert_allclose(D, np.take_along_axis(scores, order, axis=1), rtol=0, atol=1e-6)


def test_exact_search_pads_with_minus_one() -> None:
    D, I = exact_search(unit(2, seed=1), np.array([7, 8], np.int64), unit(3, seed=2), 4)
    assert (D.dtype, I.dtype, I.shape) == (np.float32, np.int64, (3, 4))
    assert (I[:, 2:] == -1).all() and np.isneginf(D[:, 2:]).all()
    assert sorted(I[0, :2].tolist()) == [7, 8]
