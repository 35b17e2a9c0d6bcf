"""Search by example: embed query images exactly as the index was built, find neighbours.

Queries can also be images already in the index (`like_vectors`: their stored vectors, no
model), and results can be restricted by a `SearchFilter` (folder, format, size, date): the
filter becomes an id set that FAISS applies inside the search, so a filter never leaves
fewer than k results when k images pass it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import defaults
from ..errors import BadImage, QueryImageError, UsageError
from ..pathnames import display, to_bytes, to_str
from ..sources.decode import decode_image, read_file
from ..store.index_dir import IndexDir, Neighbour
from .indexing import Embeds


@dataclass(frozen=True)
class QueryResult:
    """The neighbours of one query, best first."""

    query: str
    results: list[Neighbour]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "results": [
                {"id": n.id, "path": to_str(n.path), "score": round(n.score, 6)}
                for n in self.results
            ],
        }


def embed_queries(
    model: Embeds, images: Sequence[str | os.PathLike[str]], max_megapixels: float
) -> np.ndarray:
    """(n, d) float32 query vectors; raises QueryImageError naming the first bad image."""
    pixels = []
    for image in images:
        path = to_bytes(image)
        if not os.path.lexists(path):
            raise QueryImageError(f"cannot use query image {display(path)}: no such file")
        try:
            data, _ = read_file(path)
            pixels.append(decode_image(data, model.preprocess, max_megapixels)[0])
        except BadImage as exc:
            raise QueryImageError(f"cannot use query image {display(path)}: {exc}") from None
    return model.embed(np.stack(pixels))


@dataclass(frozen=True)
class SearchFilter:
    """Conditions every result must meet; None or () means no condition.

    `under`: folders (any of them); `formats`: Pillow names such as JPEG or PNG (any case);
    sizes in bytes; `modified_after` (inclusive) / `modified_before` (exclusive) in seconds
    since the epoch. Rows imported from .npy exports have no width, height or format.
    """

    under: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    min_width: int | None = None
    min_height: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    modified_after: float | None = None
    modified_before: float | None = None

    @property
    def empty(self) -> bool:
        return self == SearchFilter()


def allowed_ids(index_dir: IndexDir, filters: SearchFilter | None) -> np.ndarray | None:
    """Sorted int64 ids passing `filters`, or None when there is nothing to filter."""
    if filters is None or filters.empty:
        return None

    def ns(seconds: float | None) -> int | None:
        return None if seconds is None else int(seconds * 1e9)

    with index_dir.catalog.read() as conn:
        return index_dir.catalog.filter_ids(
            conn,
            under=[to_bytes(folder) for folder in filters.under],
            formats=filters.formats,
            min_width=filters.min_width,
            min_height=filters.min_height,
            min_size=filters.min_size,
            max_size=filters.max_size,
            mtime_after_ns=ns(filters.modified_after),
            mtime_before_ns=ns(filters.modified_before),
        )


def like_vectors(
    index_dir: IndexDir, images: Sequence[str | os.PathLike[str]]
) -> tuple[np.ndarray, np.ndarray]:
    """Stored vectors (n, d) float32 and ids (n,) int64 of indexed images; no model, no file
    read. Raises QueryImageError naming the first image the index does not hold."""
    dim = index_dir.require_manifest().dim
    paths = [to_bytes(image) for image in images]
    with index_dir.catalog.read() as conn:
        ids = index_dir.catalog.ids_for_paths(conn, paths)
        found = index_dir.catalog.vectors_for(conn, list(ids.values()), dim)
    for path in paths:
        if path not in ids:
            raise QueryImageError(
                f"{display(path)} is not in the index at {index_dir.directory}; search with "
                f"the image file itself (`retrieval search {display(path)}`) or index it first"
            )
    own = np.array([ids[p] for p in paths], dtype=np.int64)
    xq = np.stack([found[int(i)] for i in own]) if len(own) else np.zeros((0, dim), np.float32)
    return xq.astype(np.float32), own


def search_vectors(
    index_dir: IndexDir,
    xq: np.ndarray,
    names: Sequence[str],
    k: int = defaults.TOP_K,
    min_score: float | None = None,
    filters: SearchFilter | None = None,
    own_ids: Sequence[int] | None = None,
) -> list[QueryResult]:
    """Neighbours of each row of `xq` (n, d) float32, all in one batched search.

    `names` label the queries; `own_ids[i]` (or -1), when given, is query i's own id, left
    out of its results (a `--like` query does not find itself).
    """
    if k < 1:
        raise UsageError(f"-k must be at least 1, not {k}")
    allow = allowed_ids(index_dir, filters)
    extra = 1 if own_ids is not None else 0
    found = index_dir.search(np.asarray(xq, dtype=np.float32), k + extra, allow=allow)
    results = []
    for row, (name, hits) in enumerate(zip(names, found, strict=True)):
        if own_ids is not None:
            hits = [h for h in hits if h.id != own_ids[row]]
        hits = hits[:k]
        if min_score is not None:
            hits = [h for h in hits if h.score >= min_score]
        results.append(QueryResult(name, hits))
    return results
