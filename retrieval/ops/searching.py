"""Search by example: embed query images exactly as the index was built, find neighbours."""

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
        try:
            data, _ = read_file(path)
            pixels.append(decode_image(data, model.preprocess, max_megapixels)[0])
        except BadImage as exc:
            raise QueryImageError(f"cannot use query image {display(path)}: {exc}") from None
    return model.embed(np.stack(pixels))


def search_vectors(
    index_dir: IndexDir,
    xq: np.ndarray,
    names: Sequence[str],
    k: int = defaults.TOP_K,
    min_score: float | None = None,
) -> list[QueryResult]:
    """Neighbours of each row of `xq` (n, d) float32; `names` label the queries."""
    if k < 1:
        raise UsageError(f"-k must be at least 1, not {k}")
    found = index_dir.search(np.asarray(xq, dtype=np.float32), k)
    results = []
    for name, hits in zip(names, found, strict=True):
        if min_score is not None:
            hits = [h for h in hits if h.score >= min_score]
        results.append(QueryResult(name, hits))
    return results
