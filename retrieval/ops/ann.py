"""Approximate search upkeep: choose the index type, rebuild it, tune and measure its recall.

Recall is measured, not assumed. The queries are a seeded sample of stored vectors; the truth
is an exact inner-product search over every stored vector, streamed from the catalogue; each
query's own id is left out of both lists. A returned id counts as found when its exact score
reaches the k-th exact score (less TIE_EPSILON): among tied vectors (duplicate images) which
ids an exact search returns is arbitrary, and a tie is not a miss. So recall@k =
|{returned ids scoring >= the k-th exact score}| / k, and an exact index measures 1.0.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..reports import JsonReport, json_field, rounded

from ..errors import IndexIncompatible, UsageError
from ..store import vectors
from ..store.index_dir import IndexDir, choose_layout, exact_search, merge_topk
from ..store.manifest import Manifest

INDEX_CHOICES = ("auto", *vectors.INDEX_TYPES)
#: Recall@10 the tuning step aims for (the issue's target).
TARGET_RECALL = 0.95
#: Stored vectors used as recall queries.
RECALL_QUERIES = 1000
#: Cosine slack at the k-th exact score: float32 dot products of equal vectors can differ
#: in the last bits between FAISS and numpy, far below any real gap between neighbours.
TIE_EPSILON = 1e-5

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


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


def parse_size(text: str | int) -> int:
    """'4G', '512M', '1.5GiB', '1000000' -> bytes (binary units); raises UsageError."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"cannot read the size {text!r}; write it like 512M, 4G or 1.5GB")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def configure(
    manifest: Manifest,
    directory: str,
    index_type: str | None = None,
    memory: int | None = None,
    vector_dtype: str | None = None,
    new: bool = False,
    *,
    dim: int | None = None,
    whiten: bool | None = None,
    rerank: int | None = None,
) -> Manifest:
    """`manifest` with the index options applied (None: keep what it has).

    A new index starts under the `auto` policy. The vector dtype and the PCA reduction
    (`dim`; plain PCA unless `whiten=True`) are fixed at creation; `rerank` (candidates
    re-scored per result, 0: off) may change at any time.
    """
    manifest = _reduction_options(manifest, directory, dim, whiten, rerank, new)
    if not new and index_type is None and memory is None and vector_dtype is None:
        return manifest
    if index_type is not None and index_type not in INDEX_CHOICES:
        raise UsageError(
            f"unknown index type {index_type!r}; use one of {', '.join(INDEX_CHOICES)}"
        )
    if vector_dtype is not None and vector_dtype not in vectors.VECTOR_DTYPES:
        raise UsageError(
            f"unknown vector dtype {vector_dtype!r}; use one of {', '.join(vectors.VECTOR_DTYPES)}"
        )
    if new:
        manifest = replace(manifest, vector_dtype=vector_dtype or "float32")
        index_type = index_type or "auto"
    elif vector_dtype is not None and vector_dtype != manifest.vector_dtype:
        raise IndexIncompatible(
            f"the index at {directory} stores {manifest.vector_dtype} vectors, not "
            f"{vector_dtype}; copy it into a new index instead: `retrieval export --index "
            f"{directory} -o all.parquet` then `retrieval import all.parquet --index NEW_DIR "
            f"--vector-dtype {vector_dtype}`"
        )
    policy = dict(manifest.index_policy) or {"requested": manifest.index_type}
    if index_type is not None:
        policy["requested"] = index_type
    if memory is not None:
        policy["memory_bytes"] = int(memory)
    policy.setdefault("memory_bytes", None)
    if policy == manifest.index_policy:
        return manifest
    requested = policy["requested"]
    if requested == "auto":
        chosen, params = manifest.index_type, dict(manifest.index_params)
        if new:
            chosen, params = "flat", {}  # re-chosen for the real size when vectors arrive
    elif requested == manifest.index_type and not new:
        chosen, params = requested, dict(manifest.index_params)
    else:
        chosen, params = requested, {}
    return replace(manifest, index_type=chosen, index_params=params, index_policy=policy)


def _reduction_options(
    manifest: Manifest,
    directory: str,
    dim: int | None,
    whiten: bool | None,
    rerank: int | None,
    new: bool,
) -> Manifest:
    if rerank is not None:
        if rerank < 0:
            raise UsageError(f"--rerank must be 0 (off) or a positive factor, not {rerank}")
        manifest = replace(manifest, rerank=int(rerank))
    elif new:
        manifest = replace(manifest, rerank=None)
    if dim is not None and not 0 < dim < manifest.dim:
        raise UsageError(
            f"--dim must be between 1 and {manifest.dim - 1} for {manifest.model.name}'s "
            f"{manifest.dim}-d vectors, not {dim}"
        )
    if whiten is not None and dim is None and not (manifest.reduction and not new):
        raise UsageError("--whiten/--no-whiten go with --dim N (a PCA reduction)")
    if new:
        wanted = {} if dim is None else {"dim": int(dim), "whiten": bool(whiten)}
        return replace(manifest, reduction=wanted)
    have_dim = manifest.reduction.get("dim")
    have_whiten = manifest.reduction.get("whiten", False)
    same = dim in (None, have_dim) and whiten in (None, have_whiten)
    if (dim is not None or whiten is not None) and not (manifest.reduction and same):
        have = (
            f"a PCA reduction to {manifest.reduction['dim']} dimensions"
            f"{' (whitened)' if manifest.reduction.get('whiten') else ''}"
            if manifest.reduction
            else "full vectors"
        )
        raise IndexIncompatible(
            f"the index at {directory} was made with {have}; a reduction is fixed when an index "
            f"is made, so copy it into a new one: `retrieval export --index {directory} -o "
            f"all.parquet` then `retrieval import all.parquet --index NEW_DIR --dim N`"
        )
    return manifest


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
    index = index_dir.base().index
    described = vectors.describe(index)
    if described["type"] == "hnsw":
        name, values = "efSearch", [16, 32, 64, 128, 256, 512, 1024]
    elif "nlist" in described:
        nlist = described["nlist"]
        name, values = "nprobe", sorted({min(nlist, 2**i) for i in range(17) if 2**i < 2 * nlist})
    else:
        return {}
    best: tuple[float, int] = (-1.0, values[-1])
    for value in values:
        vectors.set_search_params(index, {name: value})
        recall, _ = _recall(index_dir, truth, k)
        if recall > best[0] + 1e-9:
            best = (recall, value)
        if recall >= target:
            break
    vectors.set_search_params(index, {name: best[1]})
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
    before = vectors.describe(index_dir.base().index)
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
    manifest = configure(manifest, index_dir.directory, index_type, memory)
    budget = manifest.index_policy.get("memory_bytes")
    chosen, params = (
        choose_layout(manifest, n, budget) if index_type == "auto" else (index_type, {})
    )
    kept = {k: v for k, v in index_dir.require_manifest().index_params.items() if k in _KNOBS}
    rebuild = force or not _holds(before, vectors.target_layout(chosen, n), params)
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
    after = vectors.describe(index_dir.base().index)
    return OptimizeReport(before, after, rebuild, tuned, recall, time.monotonic() - started)


#: Query-time knobs: changing them needs no rebuild.
_KNOBS = ("nprobe", "efSearch")


def _holds(described: dict[str, Any], index_type: str, params: dict[str, Any]) -> bool:
    """Whether an index `described` already is `index_type` with the build-time `params`."""
    return described["type"] == index_type and all(
        described.get(name) == params[name] for name in ("nlist", "M", "m") if name in params
    )
