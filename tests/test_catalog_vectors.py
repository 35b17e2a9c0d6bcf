"""The catalogue and the FAISS cache: search equals exact brute force over the same vectors,
before and after updates and removals; ids are unique and never reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.specs import ModelInfo, Preprocess, WeightsSpec
from retrieval.store import vectors
from retrieval.store.catalog import NewRow
from retrieval.store.index_dir import IndexDir
from retrieval.store.manifest import Manifest

D_TEST = 24


def unit(rng: np.random.Generator, n: int, d: int = D_TEST) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(xb: np.ndarray, ids: np.ndarray, xq: np.ndarray, k: int):
    """Exact top-k by inner product, best first: (scores, ids), padded with -inf / -1."""
    scores = xq.astype(np.float64) @ xb.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    D = np.full((len(xq), k), -np.inf)
    I = np.full((len(xq), k), -1, np.int64)
    take = order.shape[1]
    D[:, :take] = np.take_along_axis(scores, order, axis=1)
    I[:, :take] = ids[order]
    return D, I


def assert_same(D, I, D_ref, I_ref) -> None:
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=0, atol=1e-5)


# -- the FAISS layer on its own ----------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    xb = unit(rng, 2000)
    ids = rng.choice(10**9, size=2000, replace=False).astype(np.int64)
    xq = unit(rng, 40)
    return xb, ids, xq


@pytest.mark.parametrize("k", [1, 10, 100])
def test_flat_search_equals_brute_force(data, k: int) -> None:
    xb, ids, xq = data
    D, I = vectors.search(vectors.build(xb, ids, "flat"), xq, k)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (40, k)
    assert_same(D, I, *brute_force(xb, ids, xq, k))


def test_exclude_and_allow_equal_brute_force_over_the_subset(data) -> None:
    xb, ids, xq = data
    rng = np.random.default_rng(1)
    index = vectors.build(xb, ids, "flat")
    exclude = rng.choice(ids, 700, replace=False)
    allow = rng.choice(ids, 900, replace=False)
    keep = ~np.isin(ids, exclude)
    assert_same(
        *vectors.search(index, xq, 20, exclude=exclude), *brute_force(xb[keep], ids[keep], xq, 20)
    )
    keep = np.isin(ids, allow)
    assert_same(
        *vectors.search(index, xq, 20, allow=allow), *brute_force(xb[keep], ids[keep], xq, 20)
    )
    keep = np.isin(ids, allow) & ~np.isin(ids, exclude)
    found = vectors.search(index, xq, 20, exclude=exclude, allow=allow)
    assert_same(*found, *brute_force(xb[keep], ids[keep], xq, 20))


def test_fewer_vectors_than_k_pads_with_minus_one(data) -> None:
    xb, ids, xq = data
    D, I = vectors.search(vectors.build(xb[:3], ids[:3], "flat"), xq[:2], 5)
    assert (I[:, 3:] == -1).all() and np.isneginf(D[:, 3:]).all()
    assert sorted(I[0, :3]) == sorted(ids[:3])
    D, I = vectors.search(vectors.build(xb[:0], ids[:0], "flat"), xq[:2], 5)
    assert (I == -1).all() and I.shape == (2, 5)


def test_file_round_trip_keeps_results_and_generation(tmp_path: Path, data) -> None:
    xb, ids, xq = data
    index = vectors.build(xb, ids, "flat")
    path = str(tmp_path / "v.faiss")
    vectors.write(path, vectors.Built(index, 17))
    loaded = vectors.read(path)
    assert loaded.generation == 17
    assert_same(*vectors.search(loaded.index, xq, 10), *vectors.search(index, xq, 10))


# -- through an index directory ---------------------------------------------------------------


def new_index(directory: Path) -> IndexDir:
    preprocess = Preprocess(8, 8, 8, "bilinear", (0.5,) * 3, (0.5,) * 3)
    info = ModelInfo("fake", WeightsSpec("untrained", identity="0"), preprocess, D_TEST)
    index_dir = IndexDir.open_writer(directory)
    index_dir.set_manifest(Manifest(model=info, precision="fp32"))
    return index_dir


def row(name: str, vector: np.ndarray | None) -> NewRow:
    return NewRow(
        path=f"/photos/{name}".encode(),
        size=1,
        mtime_ns=1,
        content_hash=name.encode(),
        width=8,
        height=8,
        format="PNG",
        vector=vector,
        error=None if vector is not None else "broken",
    )


def current(index_dir: IndexDir) -> tuple[np.ndarray, np.ndarray]:
    with index_dir.catalog.read() as conn:
        return index_dir.catalog.all_vectors(conn, D_TEST)


def search_ids(index_dir: IndexDir, xq: np.ndarray, k: int):
    hits = index_dir.search(xq, k)
    I = np.full((len(xq), k), -1, np.int64)
    D = np.full((len(xq), k), -np.inf)
    for q, found in enumerate(hits):
        I[q, : len(found)] = [h.id for h in found]
        D[q, : len(found)] = [h.score for h in found]
        assert all(h.path.startswith(b"/photos/") for h in found)
    return D, I


def test_search_after_updates_and_removals(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 300
    index_dir = new_index(tmp_path / "index")
    first = unit(rng, n)
    index_dir.catalog.store([row(f"{i}.jpg", first[i]) for i in range(n)], {})
    index_dir.catalog.store([row("broken.jpg", None)], {})  # failed rows are never results
    index_dir.sync_vectors()
    xq = np.concatenate([unit(rng, 20), first[:5]])
    ids, xb = current(index_dir)
    assert len(ids) == n
    assert_same(*search_ids(index_dir, xq, 10), *brute_force(xb, ids, xq, 10))

    # Change the catalogue without rewriting the cache: search must see the new state.
    by_path = {f"/photos/{i}.jpg".encode(): int(ids[i]) for i in range(n)}
    updated = rng.choice(n, 40, replace=False)
    new_vectors = unit(rng, len(updated))
    index_dir.catalog.store(
        [row(f"{i}.jpg", v) for i, v in zip(updated, new_vectors, strict=True)], by_path
    )
    removed_ids = rng.choice(np.setdiff1d(ids, ids[updated]), 50, replace=False)
    index_dir.catalog.remove(removed_ids.tolist())
    index_dir.catalog.store([row(f"new{i}.jpg", v) for i, v in enumerate(unit(rng, 10))], {})
    xq = np.concatenate([xq, first[updated[:5]], new_vectors[:5]])
    ids, xb = current(index_dir)
    assert len(ids) == n - 50 + 10
    assert not np.isin(removed_ids, ids).any()
    stored = dict(zip(ids.tolist(), xb, strict=True))
    for i, v in zip(updated, new_vectors, strict=True):
        assert np.array_equal(stored[by_path[f"/photos/{i}.jpg".encode()]], v)  # same id

    everything = len(ids)
    for label in ("stale cache", "after sync", "fresh reader"):
        if label == "after sync":
            index_dir.sync_vectors()
        if label == "fresh reader":
            index_dir.close()
            index_dir = IndexDir.open(tmp_path / "index")
        D, I = search_ids(index_dir, xq, everything + 5)
        assert_same(D, I, *brute_force(xb, ids, xq, everything + 5))
        assert not np.isin(removed_ids, I).any(), label  # stale ids never come back
        assert (np.sort(I[:, :everything], axis=1) == np.sort(ids)).all(), label
    index_dir.close()


def test_ids_are_unique_and_never_reused(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    with new_index(tmp_path / "index") as index_dir:
        index_dir.catalog.store([row(f"{i}.jpg", v) for i, v in enumerate(unit(rng, 20))], {})
        ids, _ = current(index_dir)
        assert len(set(ids.tolist())) == 20
        index_dir.catalog.remove(ids[-5:].tolist())
        index_dir.catalog.store([row(f"again{i}.jpg", v) for i, v in enumerate(unit(rng, 5))], {})
        after, _ = current(index_dir)
        assert len(set(after.tolist())) == 20
        fresh = np.setdiff1d(after, ids)
        assert len(fresh) == 5 and fresh.min() > ids.max()
        index_dir.sync_vectors()
        cached, stored = index_dir.effective_ids()
        assert np.array_equal(cached, stored)
        assert np.array_equal(stored, np.sort(after))
