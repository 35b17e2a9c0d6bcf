"""The vector index: choosing a FAISS index type, building, patching and searching it.

The vectors modules are the only ones importing faiss: this one (construction and search),
`vectors_describe` (what a built index is and holds) and `vectors_file` (the vectors.faiss
file). Their public names are re-exported here, so `vectors.read`, `vectors.layout`... work.

Vectors are L2-normalised; the metric is inner product, so a score is a cosine similarity in
[-1, 1]. Index types: "flat" (exact), "hnsw" (graph), "ivf" (inverted lists of full vectors),
"ivfpq" (inverted lists of product-quantised codes). With vector_dtype "float16", flat, hnsw
and ivf keep half-size codes (FAISS scalar quantizer, fp16). Tombstones are ids still inside
an HNSW graph (which cannot remove ids) but deleted since: searches exclude them, and the
graph is rebuilt ("compacted") once they pass `COMPACT_RATIO` of it.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import faiss
import numpy as np

# Re-exported (noqa: F401) for the modules and tests that reach them as `vectors.NAME`.
from . import vectors_describe
from .vectors_describe import ID_OVERHEAD as _ID_OVERHEAD
from .vectors_describe import count, describe, layout, reconstruct, stored_ids, unwrap  # noqa: F401
from .vectors_file import (  # noqa: F401
    _HEADER,
    _HEADER_V1,
    FORMAT,
    MAGIC,
    Built,
    VectorsDamaged,
    read,
    write,
)

#: Re-exported as a name, not imported: `choose` has a parameter of the same name.
memory_bytes = vectors_describe.memory_bytes

INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq")
VECTOR_DTYPES = ("float32", "float16")

#: Below this many vectors `auto` keeps exact search: a query costs under ~20 MFLOP at 512-d.
FLAT_MAX = 20_000
#: `auto` picks HNSW up to this size: an update of a stored id rebuilds the graph (about 45 s
#: for 100k x 512 on the 2-core reference machine, busy).
HNSW_MAX = 100_000
#: Fewer vectors than this cannot train the type; the cache stays exact (flat) until there are.
MIN_TRAIN = {"ivf": 64, "ivfpq": 256}
#: HNSW graphs are rebuilt once this fraction of their nodes is tombstoned.
COMPACT_RATIO = 0.1
#: A filtered search whose allowed set is at most this large is answered exactly.
EXACT_ALLOW_MAX = 20_000
#: Builds of fewer vectors run on one thread: OpenMP start-up and spinning cost more than
#: the work, many times more on a busy machine.
SMALL_BUILD = 20_000
_HNSW = {"M": 32, "efConstruction": 80, "efSearch": 64}

Batches = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


# -- choosing a type ---------------------------------------------------------------------------


def default_memory_budget() -> int:
    """Half of the machine's physical memory, in bytes."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def choose(
    n: int, d: int, memory_bytes: int | None = None, vector_dtype: str = "float32"
) -> tuple[str, dict[str, Any]]:
    """The index type and parameters for `n` vectors of dimension `d` within `memory_bytes`.

    In the spirit of autofaiss: exact under FLAT_MAX vectors, HNSW while a graph fits and
    builds quickly, IVF over full vectors while they fit, else IVF-PQ with the largest code
    that fits. Raises MemoryError when not even the smallest code fits.
    """
    budget = memory_bytes or default_memory_budget()
    code = d * np.dtype(vector_dtype).itemsize
    if n < FLAT_MAX and n * (code + _ID_OVERHEAD) <= budget:
        return "flat", {}
    if n <= HNSW_MAX and n * (code + 8 * _HNSW["M"] + 2 * _ID_OVERHEAD) <= budget:
        return "hnsw", dict(_HNSW)
    nlist = default_nlist(n)
    coarse = nlist * d * 4
    if n * (code + _ID_OVERHEAD) + coarse <= budget:
        return "ivf", {"nlist": nlist, "nprobe": default_nprobe(nlist)}
    for m in (m for m in range(d // 2, 0, -1) if d % m == 0):
        if n * (m + _ID_OVERHEAD) + coarse + 256 * d * 4 <= budget:
            return "ivfpq", {"nlist": nlist, "nprobe": default_nprobe(nlist), "m": m}
    raise MemoryError(n * (1 + _ID_OVERHEAD) + coarse)


def default_nlist(n: int) -> int:
    """About sqrt(n) inverted lists (a power of two), never fewer than 39 vectors per list."""
    target = 2 ** round(math.log2(max(math.sqrt(max(n, 1)), 1)))
    return int(max(1, min(65536, target, n // 39)))


def default_nprobe(nlist: int) -> int:
    return int(min(nlist, max(16, nlist // 32)))


def target_layout(index_type: str, n: int) -> str:
    """What `build_from` makes for `index_type` over `n` vectors (flat until trainable)."""
    return "flat" if n < MIN_TRAIN.get(index_type, 0) else index_type


def resolve(index_type: str, n: int, d: int, params: dict[str, Any] | None) -> dict[str, Any]:
    """`params` completed with the defaults for `n` vectors (what `build` will use)."""
    out = dict(params or {})
    if index_type == "hnsw":
        return {**_HNSW, **out}
    if index_type in ("ivf", "ivfpq"):
        nlist = int(out.get("nlist") or default_nlist(n))
        nlist = max(1, min(nlist, max(1, n // 39)))
        out["nlist"] = nlist
        out["nprobe"] = int(min(nlist, out.get("nprobe") or default_nprobe(nlist)))
        if index_type == "ivfpq":
            out.setdefault("m", _pq_m(d))
            # 2**nbits centroids per sub-quantizer need >= 39 training points each.
            out.setdefault("nbits", int(max(1, min(8, math.floor(math.log2(max(n, 2) / 39))))))
    return out


def _pq_m(d: int) -> int:
    for m in (64, 48, 32, 16, 8, 4, 2, 1):
        if d % m == 0 and m <= d // 4:
            return m
    return 1


# -- building ----------------------------------------------------------------------------------


def build(
    xb: np.ndarray,
    ids: np.ndarray,
    index_type: str = "flat",
    params: dict | None = None,
    vector_dtype: str = "float32",
) -> Any:
    """A FAISS index over `xb` (n, d) float32 with ids (n,) int64, inner-product metric."""
    return build_from(lambda: [(ids, xb)], len(ids), xb.shape[1], index_type, params, vector_dtype)


def build_from(
    batches: Batches,
    n: int,
    d: int,
    index_type: str = "flat",
    params: dict | None = None,
    vector_dtype: str = "float32",
) -> Any:
    """Build from `batches()`, an iterable of (ids int64 (b,), xb float32 (b, d)), n in all.

    Trained types read the batches twice (a sample to train on, then everything to add), so
    at most one batch besides the index is in memory. With fewer than MIN_TRAIN[type]
    vectors a trained type is built flat (exact) instead; `layout` tells which one it is.
    """
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type {index_type!r}")
    if vector_dtype not in VECTOR_DTYPES:
        raise ValueError(f"unknown vector dtype {vector_dtype!r}")
    index_type = target_layout(index_type, n)
    p = resolve(index_type, n, d, params)
    index = _empty(index_type, d, p, vector_dtype)
    with _threads(1 if n < SMALL_BUILD else 0):
        if not index.is_trained:
            size = max(50 * p["nlist"], 50 * 2 ** p.get("nbits", 0))
            index.train(_sample(batches, n, size, d))
        for ids, xb in batches():
            if len(ids):
                xb = np.ascontiguousarray(xb, dtype=np.float32)
                index.add_with_ids(xb, ids.astype(np.int64))
    return index


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run FAISS with `n` OpenMP threads (0: leave as is) inside the block."""
    if n <= 0:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _empty(index_type: str, d: int, p: dict[str, Any], vector_dtype: str) -> Any:
    ip = faiss.METRIC_INNER_PRODUCT
    fp16 = vector_dtype == "float16"
    qt = faiss.ScalarQuantizer.QT_fp16
    if index_type == "flat":
        inner = faiss.IndexScalarQuantizer(d, qt, ip) if fp16 else faiss.IndexFlatIP(d)
        return faiss.IndexIDMap2(inner)
    if index_type == "hnsw":
        M = int(p["M"])
        inner = faiss.IndexHNSWSQ(d, qt, M, ip) if fp16 else faiss.IndexHNSWFlat(d, M, ip)
        inner.hnsw.efConstruction = int(p["efConstruction"])
        inner.hnsw.efSearch = int(p["efSearch"])
        return faiss.IndexIDMap2(inner)
    quantizer = faiss.IndexFlatIP(d)
    nlist = int(p["nlist"])
    if index_type == "ivfpq":
        index = faiss.IndexIVFPQ(quantizer, d, nlist, int(p["m"]), int(p["nbits"]), ip)
    elif fp16:
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, qt, ip, False)
    else:
        index = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
    index.nprobe = int(p["nprobe"])
    # A hash-table direct map allows both add_with_ids and remove_ids (an array map does not).
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def _sample(batches: Batches, n: int, size: int, d: int) -> np.ndarray:
    """About `size` vectors drawn uniformly (seeded) from all batches, float32 (m, d)."""
    rate = min(1.0, size / max(n, 1))
    rng = np.random.default_rng(0)
    parts = [xb[rng.random(len(xb)) < rate] if rate < 1.0 else xb for _, xb in batches() if len(xb)]
    if not parts:
        return np.zeros((0, d), np.float32)
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def set_search_params(index: Any, params: dict[str, Any]) -> None:
    """Apply query-time knobs from `params` (nprobe, efSearch) to a built index."""
    inner = unwrap(index)
    if isinstance(inner, faiss.IndexIVF) and params.get("nprobe"):
        inner.nprobe = int(min(inner.nlist, int(params["nprobe"])))
    if isinstance(inner, faiss.IndexHNSW) and params.get("efSearch"):
        inner.hnsw.efSearch = int(params["efSearch"])


# -- updating -------------------------------------------------------------------------------------


def patch(
    built: Built, stale: np.ndarray, ids: np.ndarray, xb: np.ndarray, generation: int
) -> Built | None:
    """Apply a catalogue delta in place: drop `stale` ids, add `xb` (n, d) under `ids`.

    Returns the updated Built, or None when the index must be rebuilt instead (an HNSW
    graph that would hold an id twice, or whose tombstones pass COMPACT_RATIO).
    """
    index = built.index
    stale = np.unique(np.asarray(stale, dtype=np.int64))
    ids = np.asarray(ids, dtype=np.int64)
    tombstones = built.tombstones
    if layout(index) == "hnsw":
        held = stored_ids(index)
        if np.isin(ids, held).any():
            return None
        tombstones = np.union1d(tombstones, stale[np.isin(stale, held)])
        if len(tombstones) > COMPACT_RATIO * max(int(index.ntotal), 1):
            return None
    elif len(stale):
        index.remove_ids(stale)
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(xb, dtype=np.float32), ids)
    return Built(index, generation, tombstones)


# -- searching -----------------------------------------------------------------------------------


def search(
    index: Any,
    xq: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
    allow: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product: D (nq, k) float32 scores, I (nq, k) int64 ids, -1 = none.

    `exclude` ids are never returned; if `allow` is given, only those ids are. Every row holds
    min(k, candidates) results, candidates being the stored ids allowed and not excluded: a
    small allowed set is searched exactly, and rows an approximate search left short are
    searched again exhaustively.
    """
    nq = len(xq)
    k = max(k, 0)
    if index.ntotal == 0 or k == 0:
        return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if allow is not None:
        allow = np.unique(np.asarray(allow, dtype=np.int64))
        if exclude is not None and len(exclude):
            allow = np.setdiff1d(allow, exclude, assume_unique=True)
        exclude = None
        if len(allow) <= EXACT_ALLOW_MAX and layout(index) != "flat":
            return _exact(index, xq, k, _present(index, allow))
    selector = _selector(exclude, allow)
    D, I = _search(index, xq, k, selector, exhaustive=False)
    found = (I >= 0).sum(axis=1)
    if (found < k).any() and layout(index) != "flat":
        candidates = _candidates(index, exclude, allow)
        short = np.flatnonzero(found < min(k, len(candidates)))
        if len(short):
            D[short], I[short] = _search(index, xq[short], k, selector, exhaustive=True)
            found = (I[short] >= 0).sum(axis=1)
            still = short[found < min(k, len(candidates))]
            if len(still):
                D[still], I[still] = _exact(index, xq[still], k, candidates)
    D = np.where(I < 0, -np.inf, D).astype(np.float32)
    return D, I.astype(np.int64)


def range_search(
    index: Any, xq: np.ndarray, threshold: float, exclude: np.ndarray | None = None, k: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stored vector scoring >= `threshold` against each query row of `xq` (nq, d).

    Returns faiss's range layout: lims (nq + 1,) int64, D (lims[-1],) float32 scores and
    I (lims[-1],) int64 ids, query i's results at [lims[i], lims[i + 1]) in no set order.
    `exclude` ids are never returned. HNSW and index types without range search use k-NN,
    k doubled for the rows whose k-th neighbour still passes. IVF and HNSW answer as
    approximately as their k-NN search does (nprobe, efSearch).
    """
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if index.ntotal == 0 or len(xq) == 0:
        return np.zeros(len(xq) + 1, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
    params = _params_for(index, _selector(exclude, None))
    if layout(index) == "hnsw":
        # faiss 1.15.1 aborts the process (FaissException from an OpenMP thread: "labels ==
        # nullptr && distances == nullptr") on an HNSW range search of 4096 queries over
        # 100k x 512 (tests/bench_dups.py --n 100000 --index-type hnsw); 64 queries pass.
        return _range_by_knn(index, xq, threshold, params, k)
    try:
        lims, D, I = index.range_search(xq, float(threshold), params=params)
    except RuntimeError:  # "range search not implemented" for this index type
        return _range_by_knn(index, xq, threshold, params, k)
    # lims is uint64: cast before arithmetic (np.repeat of uint64 counts fails)
    return lims.astype(np.int64), D.astype(np.float32), I.astype(np.int64)


def _range_by_knn(
    index: Any, xq: np.ndarray, threshold: float, params: Any, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    rows = np.arange(len(xq))
    while len(rows):
        k = min(k, int(index.ntotal))
        if isinstance(params, faiss.SearchParametersHNSW):  # a wider beam for a larger k
            params.efSearch = max(params.efSearch, 2 * k)
        D, I = index.search(xq[rows], k, params=params)
        passing = (D >= threshold) & (I >= 0)
        again = passing[:, -1] & (k < index.ntotal)
        r, c = np.nonzero(passing & ~again[:, None])
        parts.append((rows[r], D[r, c].astype(np.float32), I[r, c].astype(np.int64)))
        rows, k = rows[again], k * 2
    row, D_all, I_all = (np.concatenate(p) for p in zip(*parts, strict=True))
    order = np.argsort(row, kind="stable")
    lims = np.searchsorted(row[order], np.arange(len(xq) + 1)).astype(np.int64)
    return lims, D_all[order], I_all[order]


def _search(
    index: Any, xq: np.ndarray, k: int, selector: Any, exhaustive: bool
) -> tuple[np.ndarray, np.ndarray]:
    # FAISS shares out queries among its OpenMP threads: with one query the others only
    # spin, which cost a server 20 ms a search on 2 busy cores (7 ms with one thread).
    with _threads(1 if len(xq) == 1 else 0):
        if selector is None and not exhaustive:
            return index.search(xq, k)
        return index.search(xq, k, params=_params_for(index, selector, exhaustive))


def _present(index: Any, ids: np.ndarray) -> np.ndarray:
    return ids[np.isin(ids, stored_ids(index))]


def _candidates(index: Any, exclude: np.ndarray | None, allow: np.ndarray | None) -> np.ndarray:
    held = np.unique(stored_ids(index))
    if allow is not None:
        held = held[np.isin(held, allow, assume_unique=True)]
    if exclude is not None and len(exclude):
        held = held[~np.isin(held, exclude)]
    return held


def _exact(
    index: Any, xq: np.ndarray, k: int, ids: np.ndarray, batch: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over the stored vectors of `ids`, reconstructed `batch` at a time."""
    nq = len(xq)
    D = np.full((nq, k), -np.inf, np.float32)
    I = np.full((nq, k), -1, np.int64)
    for start in range(0, len(ids), batch):
        part = ids[start : start + batch]
        xb = reconstruct(index, part)
        kk = min(k, len(part))
        Dp, Ip = faiss.knn(xq, xb, kk, metric=faiss.METRIC_INNER_PRODUCT)
        D = np.concatenate([D, Dp.astype(np.float32)], axis=1)
        I = np.concatenate([I, np.where(Ip >= 0, part[np.maximum(Ip, 0)], -1)], axis=1)
        order = np.argsort(-D, axis=1, kind="stable")[:, :k]
        D, I = np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)
    return D, I


def _selector(exclude: np.ndarray | None, allow: np.ndarray | None) -> Any:
    parts = []
    if allow is not None:
        allow = np.ascontiguousarray(allow, dtype=np.int64)
        parts.append(faiss.IDSelectorBatch(len(allow), faiss.swig_ptr(allow)))
    if exclude is not None and len(exclude):
        exclude = np.ascontiguousarray(exclude, dtype=np.int64)
        batch = faiss.IDSelectorBatch(len(exclude), faiss.swig_ptr(exclude))
        parts.append(faiss.IDSelectorNot(batch))
        parts[-1].referenced = batch  # keep the inner selector alive
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    both = faiss.IDSelectorAnd(parts[0], parts[1])
    both.referenced = parts
    return both


def _params_for(index: Any, selector: Any, exhaustive: bool = False) -> Any:
    inner = unwrap(index)
    if isinstance(inner, faiss.IndexHNSW):
        ef = inner.hnsw.efSearch
        params = faiss.SearchParametersHNSW(efSearch=max(ef, 1024) if exhaustive else ef)
    elif isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(nprobe=inner.nlist if exhaustive else inner.nprobe)
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
        params.referenced = selector
    return params
