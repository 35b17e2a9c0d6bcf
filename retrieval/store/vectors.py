"""The vector index: a FAISS cache of the catalogue's vectors (the only module importing faiss).

The file holds a small header and the serialised FAISS index:

    magic b"RTVFAISS" | u32 format | u64 generation | u64 payload bytes | 32-byte SHA-256 | payload

so a truncated or bit-flipped file is detected (`VectorsDamaged`) instead of being trusted, and
`generation` says which catalogue state it was built from. Vectors are L2-normalised float32;
the metric is inner product, so a score is a cosine similarity in [-1, 1].
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

import faiss
import numpy as np

from .files import atomic_write

MAGIC = b"RTVFAISS"
FORMAT = 1
_HEADER = struct.Struct("<8sIQQ32s")
INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq")


class VectorsDamaged(Exception):
    """The vector index file is missing, truncated or corrupt (internal: it is rebuilt)."""


@dataclass(frozen=True)
class Built:
    """An in-memory FAISS index and the catalogue generation it reflects."""

    index: Any
    generation: int


def build(
    xb: np.ndarray, ids: np.ndarray, index_type: str = "flat", params: dict | None = None
) -> Any:
    """A FAISS index over `xb` (n, d) float32 with ids (n,) int64, inner-product metric."""
    d = xb.shape[1]
    params = params or {}
    if index_type == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
    elif index_type == "hnsw":
        index = faiss.IndexIDMap2(
            faiss.IndexHNSWFlat(d, int(params.get("M", 32)), faiss.METRIC_INNER_PRODUCT)
        )
        index.index.hnsw.efConstruction = int(params.get("efConstruction", 80))
        index.index.hnsw.efSearch = int(params.get("efSearch", 64))
    elif index_type in ("ivf", "ivfpq"):
        index = _ivf(xb, d, index_type, params)
    else:
        raise ValueError(f"unknown index type {index_type!r}")
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(xb, dtype=np.float32), ids.astype(np.int64))
    return index


def _ivf(xb: np.ndarray, d: int, index_type: str, params: dict) -> Any:
    nlist = int(params.get("nlist", max(1, min(65536, int(4 * np.sqrt(max(len(xb), 1)))))))
    quantizer = faiss.IndexFlatIP(d)
    if index_type == "ivf":
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        m = int(params.get("m", _pq_m(d)))
        index = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    sample = _training_sample(xb, max(nlist * 39, 10_000))
    index.train(sample)
    index.nprobe = int(params.get("nprobe", min(nlist, 32)))
    index.make_direct_map()
    return index


def _pq_m(d: int) -> int:
    for m in (64, 48, 32, 16, 8, 4, 2, 1):
        if d % m == 0 and m <= d // 4:
            return m
    return 1


def _training_sample(xb: np.ndarray, n: int) -> np.ndarray:
    if len(xb) <= n:
        return np.ascontiguousarray(xb, dtype=np.float32)
    rng = np.random.default_rng(0)
    return np.ascontiguousarray(xb[rng.choice(len(xb), n, replace=False)], dtype=np.float32)


def count(index: Any) -> int:
    return int(index.ntotal)


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
    """Stored vectors for `ids` (n, d) float32 (approximate for PQ indexes)."""
    return (
        np.stack([index.reconstruct(int(i)) for i in ids])
        if len(ids)
        else np.zeros((0, index.d), np.float32)
    )


def search(
    index: Any,
    xq: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
    allow: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product: D (nq, k) float32 scores, I (nq, k) int64 ids, -1 = none.

    `exclude` ids are never returned; if `allow` is given, only those ids are.
    """
    nq = len(xq)
    if index.ntotal == 0 or k <= 0:
        return np.full((nq, max(k, 0)), -np.inf, np.float32), np.full((nq, max(k, 0)), -1)
    selector = _selector(exclude, allow)
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if selector is None:
        D, I = index.search(xq, k)
    else:
        D, I = index.search(xq, k, params=_params_for(index, selector))
    D = np.where(I < 0, -np.inf, D).astype(np.float32)
    return D, I.astype(np.int64)


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


def _params_for(index: Any, selector: Any) -> Any:
    inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    if isinstance(inner, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=inner.hnsw.efSearch)
    elif isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(sel=selector, nprobe=inner.nprobe)
    else:
        params = faiss.SearchParameters(sel=selector)
    params.referenced = selector
    return params


# -- the file --------------------------------------------------------------------------------


def write(path: str, index: Any, generation: int) -> None:
    """Write `index` stamped with `generation` atomically (temp file, fsync, rename)."""
    payload = faiss.serialize_index(index)
    digest = hashlib.sha256(memoryview(payload)).digest()
    header = _HEADER.pack(MAGIC, FORMAT, generation, payload.nbytes, digest)

    def _write(fh: BinaryIO) -> None:
        fh.write(header)
        fh.write(memoryview(payload))

    atomic_write(path, _write, "vector index")


def read(path: str) -> Built:
    """Load and verify a vector index file; raises VectorsDamaged with the reason."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(_HEADER.size)
            payload = fh.read()
    except FileNotFoundError:
        raise VectorsDamaged("missing") from None
    except OSError as exc:
        raise VectorsDamaged(f"unreadable: {exc.strerror or exc}") from None
    if len(header) < _HEADER.size:
        raise VectorsDamaged("truncated header")
    magic, fmt, generation, size, digest = _HEADER.unpack(header)
    if magic != MAGIC or fmt != FORMAT:
        raise VectorsDamaged("not a retrieval vector index")
    if len(payload) != size:
        raise VectorsDamaged(f"truncated: {len(payload)} of {size} bytes")
    if hashlib.sha256(payload).digest() != digest:
        raise VectorsDamaged("checksum mismatch (corrupted bytes)")
    try:
        index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
    except RuntimeError as exc:
        raise VectorsDamaged(f"FAISS cannot read it: {str(exc).splitlines()[0]}") from None
    return Built(index, generation)


def describe(index: Any) -> dict[str, Any]:
    """Type and parameters of an index, for `info`."""
    inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    out: dict[str, Any] = {"faiss_class": type(inner).__name__, "ntotal": int(index.ntotal)}
    if isinstance(inner, faiss.IndexHNSW):
        out.update(M=inner.hnsw.nb_neighbors(1), efSearch=inner.hnsw.efSearch)
    if isinstance(inner, faiss.IndexIVF):
        out.update(nlist=inner.nlist, nprobe=inner.nprobe)
    return out
