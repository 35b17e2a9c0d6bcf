"""All pairs of stored vectors scoring >= a threshold, from an IVF-Flat index's own lists.

FAISS's IVF range search scans one query at a time (about 2 GFLOP/s here); this join does
the same work as matrix products, list by list: every vector is a query for the lists of
its `probe` nearest centroids, and each target list is multiplied once by all the queries
assigned to it. A pair is found when one vector's list is among the other's `probe`
nearest, as IVF search with nprobe = probe would find it (near-duplicates share their
nearest centroids). Only for IVF indexes whose codes are the stored vectors (IVF-Flat, and
float16 codes of an index storing float16 vectors), so the scores are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import faiss
import numpy as np

from .vectors_describe import unwrap

#: Queries multiplied at once against one list (bounds the score matrix to ~64 MB).
QUERY_BLOCK = 16384


def joinable(index: Any) -> bool:
    """Whether `ivf_join` can run on `index`: IVF over float32 vectors, or over float16 codes
    of the vectors themselves (not of residuals), which decode exactly."""
    inner = unwrap(index)
    if type(inner) is faiss.IndexIVFFlat:
        return True
    return (
        type(inner) is faiss.IndexIVFScalarQuantizer
        and inner.sq.qtype == faiss.ScalarQuantizer.QT_fp16
        and not inner.by_residual
    )


def ivf_join(
    index: Any,
    threshold: float,
    probe: int,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (a, b, scores) int64, int64, float32 arrays: pairs a != b, each unordered pair
    at least once, with inner product >= `threshold`. `progress(lists done, nlist)`."""
    ivf = unwrap(index)
    nlist = int(ivf.nlist)
    probe = max(1, min(probe, nlist))
    # where each vector is a query: (target list, source list, offset in the source list)
    target, source, offset = _assignments(ivf, probe)
    order = np.lexsort((offset, source, target))
    target, source, offset = target[order], source[order], offset[order]
    bounds = np.searchsorted(target, np.arange(nlist + 1))
    for m in range(nlist):
        ids_m, xm = _list(ivf, m)
        if len(ids_m):
            lo, hi = bounds[m], bounds[m + 1]
            yield from _against(ivf, ids_m, xm, m, source[lo:hi], offset[lo:hi], threshold)
        if progress is not None:
            progress(m + 1, nlist)


def _assignments(ivf: Any, probe: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every vector, the lists of its `probe` nearest centroids except its own."""
    targets, sources, offsets = [], [], []
    for list_no in range(int(ivf.nlist)):
        _, x = _list(ivf, list_no)
        if len(x) == 0 or probe == 1:
            continue
        _, A = ivf.quantizer.search(x, probe)
        rows = np.repeat(np.arange(len(x)), probe)
        A = A.ravel()
        keep = (A >= 0) & (A != list_no)
        targets.append(A[keep])
        sources.append(np.full(int(keep.sum()), list_no, np.int64))
        offsets.append(rows[keep])
    if not targets:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(targets), np.concatenate(sources), np.concatenate(offsets)


def _against(
    ivf: Any,
    ids_m: np.ndarray,
    xm: np.ndarray,
    m: int,
    source: np.ndarray,
    offset: np.ndarray,
    threshold: float,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Pairs of list m with itself (each once) and with the queries assigned to it."""
    S = xm @ xm.T
    r, c = np.nonzero(np.triu(S >= threshold, k=1))
    yield ids_m[r], ids_m[c], S[r, c]
    # the other lists' vectors that probe list m, gathered a source list at a time
    starts: np.ndarray = np.flatnonzero(np.r_[True, source[1:] != source[:-1]])
    if not len(source):
        starts = np.zeros(0, np.int64)
    ids_q: list[np.ndarray] = []
    xq: list[np.ndarray] = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(source)
        ids_l, xl = _list(ivf, int(source[start]))
        ids_q.append(ids_l[offset[start:end]])
        xq.append(xl[offset[start:end]])
    if not ids_q:
        return
    ids_all, xq_all = np.concatenate(ids_q), np.concatenate(xq)
    for lo in range(0, len(ids_all), QUERY_BLOCK):
        S = xq_all[lo : lo + QUERY_BLOCK] @ xm.T
        r, c = np.nonzero(S >= threshold)
        yield ids_all[lo + r], ids_m[c], S[r, c]


def _list(ivf: Any, list_no: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n,) int64, vectors (n, d) float32) of one inverted list, read in place."""
    lists = ivf.invlists
    n = int(lists.list_size(list_no))
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, ivf.d), np.float32)
    ids = faiss.rev_swig_ptr(lists.get_ids(list_no), n).astype(np.int64)
    codes = faiss.rev_swig_ptr(lists.get_codes(list_no), n * ivf.code_size)
    if type(ivf) is faiss.IndexIVFScalarQuantizer:  # float16 codes: decoded (a copy)
        return ids, np.frombuffer(codes, dtype=np.float16).reshape(n, ivf.d).astype(np.float32)
    return ids, np.frombuffer(codes, dtype=np.float32).reshape(n, ivf.d)
