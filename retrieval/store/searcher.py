"""Searching an index directory: the vector cache plus the catalogue rows changed since it was
written, seen in one catalogue snapshot, with optional re-scoring by the full stored vectors.

Readers take no lock. They load `vectors.faiss` (generation G), then open a read snapshot of
the catalogue (generation S >= G, because a writer commits before it rewrites the cache) and
search the cache minus the ids changed since G plus those changed rows, so every search sees
exactly snapshot S, even while a writer is running or after it was killed.

Shapes follow faiss: xq (nq, d) float32 queries, D (nq, k) float32 scores (inner products of
L2-normalised vectors: cosine), I (nq, k) int64 ids, -1 = no result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import vectors, vectors_join
from .catalog import Catalog, Delta
from .vector_cache import Built, VectorCache


@dataclass(frozen=True)
class Neighbour:
    """One search result: catalogue id, raw path bytes, cosine score."""

    id: int
    path: bytes
    score: float


def search(
    cache: VectorCache,
    xq: np.ndarray,
    k: int,
    allow: np.ndarray | None = None,
    where: dict[str, Any] | None = None,
) -> list[list[Neighbour]]:
    """Top-k neighbours of each query row of `xq` (nq, d) float32, best first.

    `allow` (int64 ids) restricts results to those ids (`where`: the conditions that made
    them, for a backend that filters by itself). Sees one catalogue snapshot.
    """
    catalog = cache.catalog
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    for attempt in range(2):
        base = cache.base()  # before the snapshot: its generation <= the snapshot's
        rerank = cache.rerank_factor()
        cache.reduction()
        with catalog.read() as conn:
            D, I = _snapshot_topk(cache, conn, base, xq, k, rerank, allow, where)
            paths = catalog.paths(conn, I[I >= 0].tolist())
        if len(paths) == len(np.unique(I[I >= 0])) or attempt:
            break
        # A sound file that is not this index's cache (copied from another index, say).
        cache.rebuild("it holds ids the catalogue does not")
    return [
        [
            Neighbour(int(i), paths[int(i)], float(s))
            for s, i in zip(d_row, i_row, strict=True)
            if i >= 0 and int(i) in paths  # a live backend may hold rows newer than the snapshot
        ]
        for d_row, i_row in zip(D, I, strict=True)
    ]


def _snapshot_topk(
    cache: VectorCache,
    conn: Any,
    base: Built,
    xq: np.ndarray,
    k: int,
    rerank: int,
    allow: np.ndarray | None,
    where: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k within the snapshot `conn`: the cache `base` minus the rows changed since it
    was written, merged with those rows searched exactly."""
    dim = cache.manifest().dim
    delta = cache.catalog.delta(conn, base.generation, dim)
    exclude = np.union1d(delta.stale, base.tombstones)
    if rerank:
        # Candidates from the cache, final scores from the full stored vectors
        # (the changed rows are searched exactly in the same full space).
        D, I = cache.candidates(base, cache.project(xq), k * rerank, exclude, allow, where)
        D, I = rescore(cache.catalog, conn, xq, I, k, dim)
        return merge_topk(D, I, *_search_delta(delta, xq, k, allow))
    xc = cache.project(xq)
    D, I = cache.candidates(base, xc, k, exclude, allow, where)
    changed = replace(delta, vectors=cache.project(delta.vectors))
    return merge_topk(D, I, *_search_delta(changed, xc, k, allow))


def rescore(
    catalog: Catalog,
    conn: Any,
    xq: np.ndarray,
    I: np.ndarray,
    k: int,
    dim: int,
    most: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of candidate ids `I` (nq, c) against full queries `xq` (nq, dim),
    read from the catalogue; the best k per row: D (nq, k) float32, I (nq, k), -1 = none.

    Queries go a few at a time, so memory holds at most `most` full vectors (128 MB at
    2048-d; a batch of 1000 queries x 352 candidates read at once peaked at 5.8 GiB)."""
    chunk = max(1, most // max(I.shape[1], 1))
    D = np.full(I.shape, -np.inf, np.float32)
    for start in range(0, len(I), chunk):
        ids = I[start : start + chunk]
        found, matrix = catalog.vectors_matrix(conn, ids[ids >= 0].tolist(), dim)
        # found is sorted; an extra zero row stands for -1 and for ids no longer stored
        table = np.concatenate([matrix, np.zeros((1, dim), np.float32)])
        pos = np.searchsorted(found, ids)
        present = (ids >= 0) & (pos < len(found))
        present[present] = found[pos[present]] == ids[present]
        pos = np.where(present, pos, len(found))
        scores = np.matmul(table[pos], xq[start : start + chunk, :, None])[..., 0]
        D[start : start + chunk] = np.where(present, scores, -np.inf)
    order = np.argsort(-D, axis=1, kind="stable")[:, :k]
    D, I = np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)
    return D, np.where(np.isfinite(D), I, -1)


def _search_delta(
    delta: Delta, xq: np.ndarray, k: int, allow: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over the rows changed since the cache was written."""
    ids, xb = delta.ids, delta.vectors
    if allow is not None and len(ids):
        keep = np.isin(ids, allow)
        ids, xb = ids[keep], xb[keep]
    return exact_search(xb, ids, xq, k)


def exact_search(
    xb: np.ndarray, ids: np.ndarray, xq: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by inner product of `xq` (nq, d) against `xb` (n, d) whose ids are
    `ids` (n,) int64: D (nq, k) float32, I (nq, k) int64, -1 = none."""
    nq = len(xq)
    D = np.full((nq, k), -np.inf, np.float32)
    I = np.full((nq, k), -1, np.int64)
    if len(ids) == 0 or k == 0:
        return D, I
    scores = xq.astype(np.float32) @ xb.T
    take = min(k, len(ids))
    top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    D[:, :take] = np.take_along_axis(scores, top, axis=1)
    I[:, :take] = ids[top]
    return D, I


def merge_topk(
    D1: np.ndarray, I1: np.ndarray, D2: np.ndarray, I2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two top-k result sets row by row, best scores first."""
    k = D1.shape[1]
    D = np.concatenate([D1, D2], axis=1)
    I = np.concatenate([I1, I2], axis=1)
    order = np.argsort(-D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)


class RangeFinder:
    """Pairs of stored images whose exact cosine is >= `threshold`, within one catalogue
    snapshot `conn` opened after `base` was loaded (as `search` does): the cache `base`
    minus the rows changed since it was written, plus those rows searched exactly.

    A cache whose scores are exact (its codes are the stored vectors: float32, or float16 for
    an index storing float16; no reduction) is range-searched; a lossy one (PQ codes, a PCA
    reduction, or any cache with re-ranking on) gives k-NN candidates, re-scored with the
    full stored vectors, k growing for the rows whose candidates mostly pass.
    """

    #: Neighbours asked of a lossy cache per query at first (times the re-rank factor).
    FIRST_K = 16

    def __init__(self, cache: VectorCache, conn: Any, base: Built, threshold: float) -> None:
        self.cache, self.conn, self.base, self.threshold = cache, conn, base, threshold
        self.dim = cache.manifest().dim
        self.delta = cache.catalog.delta(conn, base.generation, self.dim)
        self.exclude = np.union1d(self.delta.stale, base.tombstones)
        manifest = cache.manifest()
        # float16 codes are not lossy here: the catalogue stores the same float16 values
        self.lossy = cache.rerank_factor() > 0 or manifest.reduced or not cache.exact_range
        self.factor = max(cache.rerank_factor(), 2)

    def pairs(self, ids: np.ndarray, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query ids, neighbour ids, exact cosines), each (p,), for the queries `xq`
        (nq, dim) float32 (full stored vectors) whose ids are `ids` (nq,); self-pairs left out."""
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        if self.lossy:
            rows, found, scores = self._lossy(xq)
        else:
            lims, scores, found = vectors.range_search(
                self.base.index, xq, self.threshold, self.exclude
            )
            rows = np.repeat(np.arange(len(xq)), np.diff(lims))
        # The rows changed since the cache was written: exact, in the full space.
        S = xq @ self.delta.vectors.T
        dr, dc = np.nonzero(S >= self.threshold)
        a = np.concatenate([ids[rows], ids[dr]])
        b = np.concatenate([found, self.delta.ids[dc]])
        s = np.concatenate([scores, S[dr, dc]]).astype(np.float32)
        keep = a != b
        return a[keep], b[keep], s[keep]

    def can_join(self) -> bool:
        """Whether `join` applies: an IVF cache with exact scores (see `vectors_join`)."""
        return not self.lossy and vectors_join.joinable(self.base.index)

    def join(
        self, probe: int, progress: Callable[[int, int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every pair (a, b, exact cosine) >= the threshold in the snapshot, each unordered
        pair at least once: the cache's lists joined (see `vectors_join`; `probe` lists per
        vector), less the rows changed since, plus those rows searched as queries."""
        parts = list(vectors_join.ivf_join(self.base.index, self.threshold, probe, progress))
        if parts:
            a, b, s = (np.concatenate(p) for p in zip(*parts, strict=True))
        else:
            a, b, s = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        if len(self.exclude):
            keep = ~(np.isin(a, self.exclude) | np.isin(b, self.exclude))
            a, b, s = a[keep], b[keep], s[keep]
        if len(self.delta.ids):
            da, db, ds = self.pairs(self.delta.ids, self.delta.vectors)
            a, b, s = np.concatenate([a, da]), np.concatenate([b, db]), np.concatenate([s, ds])
        return a, b, s.astype(np.float32)

    def _lossy(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xc = self.cache.project(xq)
        total = int(self.base.index.ntotal)
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        todo, k = np.arange(len(xq)), self.FIRST_K
        while len(todo):
            want = min(k * self.factor, total)
            _, I = self.cache.candidates(self.base, xc[todo], want, self.exclude, None)
            D, I = rescore(self.cache.catalog, self.conn, xq[todo], I, want, self.dim)
            passing = (D >= self.threshold) & (I >= 0)
            # Most candidates pass: there may be more duplicates than candidates fetched.
            again = (passing.sum(axis=1) * 2 > want) & (want < total)
            r, c = np.nonzero(passing[~again])
            out.append((todo[~again][r], I[~again][r, c], D[~again][r, c]))
            todo, k = todo[again], k * 4
        if not out:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return tuple(np.concatenate(parts) for parts in zip(*out, strict=True))  # type: ignore[return-value]
