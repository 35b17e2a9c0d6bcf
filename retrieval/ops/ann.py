"""Approximate search upkeep: choose the index type, rebuild it, tune and measure its recall.

Recall is measured, not assumed. The queries are a seeded sample of stored vectors; the truth
is an exact inner-product search over every stored vector, streamed from the catalogue; each
query's own id is left out of both lists. A returned id counts as found when its exact score
reaches the k-th exact score (less TIE_EPSILON): among tied vectors (duplicate images) which
ids an exact search returns is arbitrary, and a tie is not a miss. So recall@k =
|{returned ids scoring >= the k-th exact score}| / k, and an exact index measures 1.0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .. import defaults
from ..errors import UsageError
from ..reports import JsonReport, json_field, rounded
from ..specs import StorageOptions
from ..store.index_dir import IndexDir
from ..store.searcher import exact_search, merge_topk
from ..store.vector_cache import choose_layout, target_layout
from .storage import configure

INDEX_CHOICES = defaults.INDEX_TYPES  # "auto" and the types store.vectors builds
TARGET_RECALL = defaults.TARGET_RECALL
RECALL_QUERIES = defaults.RECALL_QUERIES
#: Cosine slack at the k-th exact score: float32 dot products of equal vectors can differ
#: in the last bits between FAISS and numpy, far below any real gap between neighbours.
TIE_EPSILON = 1e-5


@dataclass(frozen=True)
class RecallReport(JsonReport):
    """Recall@k of the index against exact search, and what a query costs (batched)."""

    k: int
    queries: int
    recall: float = json_field(key=lambda r: f"recall@{r.k}", json=rounded(4))
    ms_per_query: float = json_field(json=rounded(4))
    exact_ms_per_query: float = json_field(json=rounded(4))


@dataclass(frozen=True)
class OptimizeReport(JsonReport):
    """What `optimize` found and did: index before/after, tuned knobs, measured recall."""

    before: dict[str, Any]
    after: dict[str, Any]
    rebuilt: bool
    tuned: dict[str, Any] = field(default_factory=dict)
    recall: RecallReport | None = None
    seconds: float = json_field(0.0, json=rounded(3))

    def summary(self) -> str:
        line = f"{self.before['type']} -> {self.after['type']}" if self.rebuilt else "unchanged"
        line += f" ({self.after['ntotal']} vectors, ~{self.after['memory_bytes'] >> 20} MiB)"
        if self.tuned:
            line += ", tuned " + ", ".join(f"{k}={v}" for k, v in self.tuned.items())
        if self.recall:
            r = self.recall
            line += (
                f"; recall@{r.k} {r.recall:.3f} on {r.queries} queries, "
                f"{r.ms_per_query:.3f} ms/query (exact {r.exact_ms_per_query:.3f})"
            )
        return line + f" in {self.seconds:.1f} s"


# -- recall ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Truth:
    qids: np.ndarray  # (nq,) ids of the query vectors
    xq: np.ndarray  # (nq, d) float32
    I: np.ndarray  # (nq, k) exact neighbour ids, own id left out, -1 = none
    kth: np.ndarray  # (nq,) float32 exact score of the last neighbour in I (-inf: none)
    exact_seconds: float


def _truth(index_dir: IndexDir, k: int, queries: int, seed: int) -> _Truth:
    manifest = index_dir.require_manifest()
    catalog = index_dir.catalog
    with catalog.read() as conn:
        ids = catalog.filter_ids(conn)
        rng = np.random.default_rng(seed)
        qids = np.sort(rng.choice(ids, size=min(queries, len(ids)), replace=False))
        found = catalog.vectors_for(conn, qids.tolist(), manifest.dim)
        xq = np.stack([found[int(i)] for i in qids]).astype(np.float32)
        started = time.perf_counter()
        D = np.full((len(qids), k + 1), -np.inf, np.float32)
        I = np.full((len(qids), k + 1), -1, np.int64)
        for bids, xb in catalog.iter_vectors(conn, manifest.dim, batch=16384):
            D, I = merge_topk(D, I, *exact_search(xb, bids, xq, k + 1))
        exact_seconds = time.perf_counter() - started
    exact_ids, kth = _drop_self(I, qids, k, D)
    return _Truth(qids, xq, exact_ids, kth, exact_seconds)


def _drop_self(
    I: np.ndarray, qids: np.ndarray, k: int, D: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(ids (nq, k) without each query's own id, -1 padded; (nq,) score of the last kept
    id, -inf where none; from `D` (nq, k + 1) when given, else -inf)."""
    out = np.full((len(I), k), -1, np.int64)
    kth = np.full(len(I), -np.inf, np.float32)
    for row, (ids, own) in enumerate(zip(I, qids, strict=True)):
        keep = (ids != own) & (ids >= 0)
        kept = ids[keep][:k]
        out[row, : len(kept)] = kept
        if D is not None and len(kept):
            kth[row] = D[row][keep][len(kept) - 1]
    return out, kth


def _recall(index_dir: IndexDir, truth: _Truth, k: int) -> tuple[float, float]:
    """(recall@k, seconds) of the index's current search over the truth's queries.

    A returned id is found when its exact score (query . stored vector, recomputed from the
    catalogue: a lossy cache's own score does not decide) is >= the k-th exact score minus
    TIE_EPSILON; found ids per query are capped at the exact list's length.
    """
    started = time.perf_counter()
    found = index_dir.search(truth.xq, k + 1)
    seconds = time.perf_counter() - started
    got, _ = _drop_self(
        np.array([[h.id for h in hits] + [-1] * (k + 1 - len(hits)) for hits in found]),
        truth.qids,
        k,
    )
    scores = _exact_scores(index_dir, truth.xq, got)
    hits = total = 0
    for mine, score, exact, kth in zip(got, scores, truth.I, truth.kth, strict=True):
        wanted = int((exact >= 0).sum())
        good = (mine >= 0) & (score >= kth - TIE_EPSILON)
        hits += min(len(np.unique(mine[good])), wanted)
        total += wanted
    return (hits / total if total else 1.0), seconds


def _exact_scores(index_dir: IndexDir, xq: np.ndarray, I: np.ndarray) -> np.ndarray:
    """(nq, k) float32 exact inner products of each query with its ids' stored vectors
    (-inf for -1 or a row gone meanwhile)."""
    manifest = index_dir.require_manifest()
    with index_dir.catalog.read() as conn:
        stored = index_dir.catalog.vectors_for(conn, I[I >= 0].tolist(), manifest.dim)
    scores = np.full(I.shape, -np.inf, np.float32)
    for row, ids in enumerate(I):
        for col, vid in enumerate(ids):
            vector = stored.get(int(vid))
            if vector is not None:
                scores[row, col] = float(np.dot(xq[row], vector.astype(np.float32)))
    return scores


def measure(
    index_dir: IndexDir, k: int = 10, queries: int = RECALL_QUERIES, seed: int = 0
) -> RecallReport:
    """Recall@k of the index against exact search, on `queries` stored vectors."""
    truth = _truth(index_dir, k, queries, seed)
    return _report(index_dir, truth, k)


def _report(index_dir: IndexDir, truth: _Truth, k: int) -> RecallReport:
    nq = max(len(truth.qids), 1)
    recall, seconds = _recall(index_dir, truth, k)
    return RecallReport(
        k, len(truth.qids), recall, 1e3 * seconds / nq, 1e3 * truth.exact_seconds / nq
    )


def tune(index_dir: IndexDir, truth: _Truth, k: int, target: float) -> dict[str, Any]:
    """The smallest nprobe (IVF) or efSearch (HNSW) whose recall@k reaches `target`.

    Applied to the loaded index; returns {} for exact indexes. When no value reaches the
    target, the one with the best recall is kept.
    """
    cache = index_dir.cache
    described = cache.describe()
    if described["type"] == "hnsw":
        name, values = "efSearch", [16, 32, 64, 128, 256, 512, 1024]
    elif "nlist" in described:
        nlist = described["nlist"]
        name, values = "nprobe", sorted({min(nlist, 2**i) for i in range(17) if 2**i < 2 * nlist})
    else:
        return {}
    best: tuple[float, int] = (-1.0, values[-1])
    for value in values:
        cache.set_search_params({name: value})
        recall, _ = _recall(index_dir, truth, k)
        if recall > best[0] + 1e-9:
            best = (recall, value)
        if recall >= target:
            break
    cache.set_search_params({name: best[1]})
    return {name: best[1]}


def optimize(
    index_dir: IndexDir,
    index_type: str = "auto",
    memory: int | None = None,
    target_recall: float = TARGET_RECALL,
    queries: int = RECALL_QUERIES,
    k: int = 10,
    measure_only: bool = False,
    force: bool = False,
) -> OptimizeReport:
    """Re-choose the index type for the collection as it is now, rebuild, tune, measure.

    The cache is rebuilt when the choice differs from what it holds (type, nlist, M, m), or
    with `force`. `index_dir` must be open for writing unless `measure_only`. `auto` uses
    `memory` (bytes; default: the index's recorded budget, else half the RAM).
    """
    started = time.monotonic()
    manifest = index_dir.require_manifest()
    before = index_dir.cache.describe()
    with index_dir.catalog.read() as conn:
        n = index_dir.catalog.counts(conn)["ok"]
    if n == 0:
        raise UsageError(
            f"the index at {index_dir.directory} holds no vectors yet; add some with "
            f"`retrieval index --index {index_dir.directory} FOLDER` first"
        )
    if measure_only:
        recall = measure(index_dir, k, queries)
        return OptimizeReport(before, before, False, {}, recall, time.monotonic() - started)
    asked = StorageOptions(index_type=index_type, memory=memory)
    manifest = configure(manifest, index_dir.directory, asked)
    budget = manifest.index_policy.get("memory_bytes")
    chosen, params = (
        choose_layout(manifest, n, budget) if index_type == "auto" else (index_type, {})
    )
    kept = {k: v for k, v in index_dir.require_manifest().index_params.items() if k in _KNOBS}
    rebuild = force or not _holds(before, target_layout(chosen, n), params)
    index_dir.set_manifest(
        replace(manifest, index_type=chosen, index_params=params if rebuild else {**params, **kept})
    )
    if rebuild:
        index_dir.rebuild_vectors(quiet=True)
    truth = _truth(index_dir, k, queries, seed=0)
    tuned = tune(index_dir, truth, k, target_recall)
    if tuned:
        current = index_dir.require_manifest()
        index_dir.set_manifest(current.with_index(chosen, {**current.index_params, **tuned}))
        index_dir.sync_vectors()
    recall = _report(index_dir, truth, k)
    after = index_dir.cache.describe()
    return OptimizeReport(before, after, rebuild, tuned, recall, time.monotonic() - started)


#: Query-time knobs: changing them needs no rebuild.
_KNOBS = ("nprobe", "efSearch")


def _holds(described: dict[str, Any], index_type: str, params: dict[str, Any]) -> bool:
    """Whether an index `described` already is `index_type` with the build-time `params`."""
    return described["type"] == index_type and all(
        described.get(name) == params[name] for name in ("nlist", "M", "m") if name in params
    )
