"""The vector index: a FAISS cache of the catalogue's vectors (the only module importing faiss).

The file holds a small header, the serialised FAISS index and the index's tombstones:

    magic b"RTVFAISS" | u32 format | u64 generation | u64 payload bytes | u64 tombstones
    | 32-byte seal | 16-byte catalogue id | payload | tombstones (int64 ids)

(the seal is a SHA-256 over the generation, both sizes, the catalogue id and the SHA-256 of
everything after the header; see `_seal`). The catalogue id (a random UUID the catalogue
keeps; zeros for a catalogue made before ids existed) binds the file to its catalogue: a
sound file copied from another index with the same ids and generation is not this index's.

so a truncated or bit-flipped file is detected (`VectorsDamaged`) instead of being trusted, and
`generation` says which catalogue state it was built from. Tombstones are ids still inside an
HNSW graph (which cannot remove ids) but deleted since: searches exclude them, and the graph is
rebuilt ("compacted") once they pass `COMPACT_RATIO` of it. Format 1 files (no tombstones) and
format 2 files (no catalogue id) are still read.

Vectors are L2-normalised; the metric is inner product, so a score is a cosine similarity in
[-1, 1]. Index types: "flat" (exact), "hnsw" (graph), "ivf" (inverted lists of full vectors),
"ivfpq" (inverted lists of product-quantised codes). With vector_dtype "float16", flat, hnsw
and ivf keep half-size codes (FAISS scalar quantizer, fp16).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import faiss
import numpy as np

from .files import atomic_write, open_regular

MAGIC = b"RTVFAISS"
FORMAT = 3
_PREFIX = struct.Struct("<8sI")
_HEADER_V1 = struct.Struct("<8sIQQ32s")
_HEADER_V2 = struct.Struct("<8sIQQQ32s")
_HEADER = struct.Struct("<8sIQQQ32s16s")
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
#: Bytes per vector that a FAISS id map / direct map costs on top of the codes (estimate).
_ID_OVERHEAD = 64
_HNSW = {"M": 32, "efConstruction": 80, "efSearch": 64}

Batches = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


class VectorsDamaged(Exception):
    """The vector index file is missing, truncated or corrupt (internal: it is rebuilt)."""


def _no_ids() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass(frozen=True)
class Built:
    """An in-memory FAISS index, the catalogue generation it reflects and its tombstones.

    `tombstones` (sorted int64) are ids still stored in `index` that must never be returned.
    `catalog_id`: the hex id of the catalogue it was read as built from ("" for none).
    """

    index: Any
    generation: int
    tombstones: np.ndarray = field(default_factory=_no_ids)
    catalog_id: str = ""


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
    inner = _inner(index)
    if isinstance(inner, faiss.IndexIVF) and params.get("nprobe"):
        inner.nprobe = int(min(inner.nlist, int(params["nprobe"])))
    if isinstance(inner, faiss.IndexHNSW) and params.get("efSearch"):
        inner.hnsw.efSearch = int(params["efSearch"])


# -- describing ---------------------------------------------------------------------------------


def _inner(index: Any) -> Any:
    return faiss.downcast_index(index.index) if hasattr(index, "id_map") else index


def layout(index: Any) -> str:
    """Which of INDEX_TYPES `index` is."""
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    return "flat"


def count(index: Any) -> int:
    return int(index.ntotal)


def memory_bytes(index: Any) -> int:
    """Estimated RAM held by `index` (codes, ids, graph links, centroids)."""
    inner = _inner(index)
    n = int(index.ntotal)
    total = n * (int(getattr(inner, "code_size", 4 * index.d)) + _ID_OVERHEAD)
    if isinstance(inner, faiss.IndexHNSW):
        total += n * (8 * inner.hnsw.nb_neighbors(1) + _ID_OVERHEAD)
    if isinstance(inner, faiss.IndexIVF):
        total += inner.nlist * index.d * 4
    return int(total)


def describe(index: Any) -> dict[str, Any]:
    """Type, parameters and estimated memory of an index, for `info`."""
    inner = _inner(index)
    out: dict[str, Any] = {
        "type": layout(index),
        "faiss_class": type(inner).__name__,
        "ntotal": int(index.ntotal),
        "memory_bytes": memory_bytes(index),
    }
    if isinstance(inner, faiss.IndexHNSW):
        out.update(M=inner.hnsw.nb_neighbors(1), efSearch=inner.hnsw.efSearch)
    if isinstance(inner, faiss.IndexIVF):
        out.update(nlist=inner.nlist, nprobe=inner.nprobe)
    if isinstance(inner, faiss.IndexIVFPQ):
        out.update(m=inner.pq.M, nbits=inner.pq.nbits)
    return out


def stored_ids(index: Any) -> np.ndarray:
    """The ids held by `index` (int64, unsorted, duplicates included if any)."""
    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    invlists = faiss.extract_index_ivf(index).invlists
    parts = [
        faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
        for i in range(invlists.nlist)
        if invlists.list_size(i)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def reconstruct(index: Any, ids: np.ndarray) -> np.ndarray:
    """Stored vectors for `ids` (n, d) float32 (approximate for PQ and fp16 codes)."""
    if len(ids) == 0:
        return np.zeros((0, index.d), np.float32)
    return index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))


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


def _search(
    index: Any, xq: np.ndarray, k: int, selector: Any, exhaustive: bool
) -> tuple[np.ndarray, np.ndarray]:
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
    inner = _inner(index)
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


# -- the file ---------------------------------------------------------------------------------


def write(
    path: str, built_or_index: Any, generation: int | None = None, *, catalog_id: str = ""
) -> None:
    """Write a Built (or an index stamped with `generation`) atomically, streaming the payload,
    bound to the catalogue with hex id `catalog_id` ("" for none).

    The index is serialised straight into the temporary file (no second copy in memory);
    the header, written last, holds the payload size and the checksum.
    """
    if isinstance(built_or_index, Built):
        built = built_or_index
    else:
        assert generation is not None
        built = Built(built_or_index, generation)
    tombstones = np.ascontiguousarray(built.tombstones, dtype=np.int64)
    owner = _catalog_id_bytes(catalog_id)

    def _write(fh: BinaryIO) -> None:
        fh.write(b"\0" * _HEADER.size)
        digest = hashlib.sha256()
        size = 0
        failure: list[OSError] = []

        def chunk(data: bytes) -> int:
            nonlocal size
            try:
                fh.write(data)
            except OSError as exc:
                failure.append(exc)
                raise
            digest.update(data)
            size += len(data)
            return len(data)

        writer = faiss.PyCallbackIOWriter(chunk)
        try:
            faiss.write_index(built.index, writer)
        except RuntimeError:
            if failure:
                raise failure[0] from None
            raise
        finally:
            del writer
        tail = tombstones.tobytes()
        fh.write(tail)
        digest.update(tail)
        fh.seek(0)
        sealed = _seal(digest.digest(), built.generation, size, len(tombstones), owner)
        header = (MAGIC, FORMAT, built.generation, size, len(tombstones), sealed, owner)
        fh.write(_HEADER.pack(*header))

    atomic_write(path, _write, "vector index")


def _seal(
    body_digest: bytes, generation: int, size: int, n_tomb: int, owner: bytes | None = None
) -> bytes:
    """The header's checksum: covers the generation, sizes and catalogue id too, not only the
    body, since a flipped generation would make readers skip the catalogue changes made after
    it. `owner` None: a format 2 file (no catalogue id)."""
    fields = struct.pack("<QQQ", generation, size, n_tomb) + (owner or b"")
    return hashlib.sha256(fields + body_digest).digest()


def _catalog_id_bytes(catalog_id: str) -> bytes:
    """A catalogue's hex id as the header's 16 bytes (zeros for "")."""
    raw = bytes.fromhex(catalog_id) if catalog_id else b""
    if len(raw) > 16:
        raise ValueError(f"catalogue id {catalog_id!r} is longer than 16 bytes")
    return raw.ljust(16, b"\0")


def read(path: str) -> Built:
    """Load and verify a vector index file; raises VectorsDamaged with the reason."""
    try:
        with open_regular(path) as fh:
            return _read(fh)
    except FileNotFoundError:
        raise VectorsDamaged("missing") from None
    except OSError as exc:
        raise VectorsDamaged(f"unreadable: {exc.strerror or exc}") from None


def _read(fh: BinaryIO) -> Built:
    prefix = fh.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise VectorsDamaged("truncated header")
    magic, fmt = _PREFIX.unpack(prefix)
    if magic != MAGIC or fmt not in (1, 2, FORMAT):
        raise VectorsDamaged("not a retrieval vector index")
    header_struct = {1: _HEADER_V1, 2: _HEADER_V2}.get(fmt, _HEADER)
    rest = fh.read(header_struct.size - _PREFIX.size)
    if len(rest) < header_struct.size - _PREFIX.size:
        raise VectorsDamaged("truncated header")
    fields = header_struct.unpack(prefix + rest)
    generation, size = fields[2], fields[3]
    digest_expected = fields[4] if fmt == 1 else fields[5]
    n_tomb = fields[4] if fmt >= 2 else 0
    owner = fields[6] if fmt == FORMAT else None
    actual = os.fstat(fh.fileno()).st_size - header_struct.size
    if actual != size + 8 * n_tomb:
        state = "truncated" if actual < size + 8 * n_tomb else "longer than its header says"
        raise VectorsDamaged(f"{state}: {max(actual, 0)} of {size + 8 * n_tomb} bytes")
    # Verify before FAISS parses anything: a flipped length field could make it allocate wildly.
    digest = hashlib.sha256()
    while block := fh.read(1 << 22):
        digest.update(block)
    found = (
        digest.digest() if fmt == 1 else _seal(digest.digest(), generation, size, n_tomb, owner)
    )
    if found != digest_expected:
        raise VectorsDamaged("checksum mismatch (corrupted bytes)")
    fh.seek(header_struct.size)
    reader = faiss.PyCallbackIOReader(fh.read)
    try:
        index = faiss.read_index(reader)
    except RuntimeError as exc:
        raise VectorsDamaged(f"FAISS cannot read it: {str(exc).splitlines()[0]}") from None
    finally:
        del reader
    if fh.tell() != header_struct.size + size:
        raise VectorsDamaged("payload size does not match its header")
    tail = fh.read()
    catalog_id = owner.hex() if owner and any(owner) else ""
    return Built(index, generation, np.frombuffer(tail, dtype=np.int64).copy(), catalog_id)
