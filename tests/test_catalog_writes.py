"""Catalogue writes as readers see them: an upsert of a path stored by a run we did not plan
against updates that row, and a removal is seen by every reader of the old vector cache
through the removals log until the cache is rewritten (without the log a reader finds ids
the catalogue lacks and must rebuild the whole cache, with a notice, on every search)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_catalog_vectors import brute_force, current, new_index, row, search_ids, unit


def test_storing_a_path_already_stored_updates_its_row(tmp_path: Path) -> None:
    """`store(rows, existing={})` for a path another run stored: same id, new vector."""
    rng = np.random.default_rng(1)
    first, second = unit(rng, 2)
    with new_index(tmp_path / "index") as index_dir:
        index_dir.catalog.store([row("a.jpg", first)], {})
        (before,), _ = current(index_dir)
        index_dir.catalog.store([row("a.jpg", second), row("b.jpg", first)], {})
        ids, xb = current(index_dir)
    assert len(ids) == 2 and before in ids
    np.testing.assert_array_equal(xb[ids.tolist().index(before)], second)


def test_removed_rows_leave_stale_cache_searches_whole(tmp_path: Path) -> None:
    """Rows removed after the cache was written: a search of the old cache returns k results,
    exactly the brute-force ones over what is left; `effective_ids` agrees."""
    rng = np.random.default_rng(5)
    xb = unit(rng, 100)
    index_dir = new_index(tmp_path / "index")
    index_dir.catalog.store([row(f"{i}.jpg", v) for i, v in enumerate(xb)], {})
    index_dir.sync_vectors()
    ids, _ = current(index_dir)
    gone = ids[:30]  # queried by their own vectors: each was its query's best hit
    index_dir.catalog.remove(gone.tolist())
    ids_left, xb_left = current(index_dir)
    for reader in ("same process", "fresh reader"):
        if reader == "fresh reader":
            index_dir.close()
            index_dir = type(index_dir).open(tmp_path / "index")
        D, I = search_ids(index_dir, xb[:30], 10)
        D_ref, I_ref = brute_force(xb_left, ids_left, xb[:30], 10)
        np.testing.assert_array_equal(I, I_ref)
        np.testing.assert_allclose(D, D_ref, rtol=0, atol=1e-5)
        cached, stored = index_dir.effective_ids()
        assert np.array_equal(cached, stored) and not np.isin(gone, cached).any(), reader
        assert index_dir.notices == [], reader  # patched from the removals log, not rebuilt
    index_dir.close()
