"""What a built FAISS index is and holds: its layout, ids, stored vectors, memory, for `info`.

Indexes are the ones `vectors.build_from` makes: flat and HNSW wrapped in an IndexIDMap2,
IVF types with a hash-table direct map.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

#: Bytes per vector that a FAISS id map / direct map costs on top of the codes (estimate).
ID_OVERHEAD = 64


def unwrap(index: Any) -> Any:
    return faiss.downcast_index(index.index) if hasattr(index, "id_map") else index


def layout(index: Any) -> str:
    """Which of INDEX_TYPES `index` is."""
    inner = unwrap(index)
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
    inner = unwrap(index)
    n = int(index.ntotal)
    total = n * (int(getattr(inner, "code_size", 4 * index.d)) + ID_OVERHEAD)
    if isinstance(inner, faiss.IndexHNSW):
        total += n * (8 * inner.hnsw.nb_neighbors(1) + ID_OVERHEAD)
    if isinstance(inner, faiss.IndexIVF):
        total += inner.nlist * index.d * 4
    return int(total)


def describe(index: Any) -> dict[str, Any]:
    """Type, parameters and estimated memory of an index, for `info`."""
    inner = unwrap(index)
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
