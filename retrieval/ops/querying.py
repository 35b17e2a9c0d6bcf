"""Turning what a user asks `Index.search` into queries: image files or streams embedded
with the index's own model, and images already indexed (`like`: their stored vectors).

`searching` searches them; this module only assembles them, images first, in order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError
from ..store.index_dir import IndexDir
from ..store.manifest import Manifest
from . import embedders
from .searching import (
    Query,
    QueryStream,
    check_limits,
    embed_each,
    like_each,
    like_ids_each,
)


def check_request(
    images: Sequence[object],
    like: Sequence[object],
    k: int,
    min_score: float | None,
    like_ids: Sequence[int] = (),
) -> None:
    """Raise UsageError for a search with no queries, or with limits out of range (before
    the index is opened)."""
    if not images and not like and not like_ids:
        raise UsageError("give query IMAGES, or --like PATH for an image already indexed")
    check_limits(k, min_score)


def gather(
    index_dir: IndexDir,
    images: Sequence[str | os.PathLike[str] | QueryStream],
    like: Sequence[str | os.PathLike[str]],
    device: str,
    max_megapixels: float,
    like_ids: Sequence[int] = (),
    embedder: Any = None,
) -> list[Query]:
    """One Query per image (embedded with `embedder`, else the index's model loaded now --
    only when there are images), then one per `like` path and one per `like_ids` id (their
    stored vectors); unusable ones carry their error."""
    queries = []
    if images:
        if embedder is None:
            embedder = query_embedder(index_dir.require_manifest(), device)
        queries += embed_each(embedder, images, max_megapixels)
    if like:
        queries += like_each(index_dir, like)
    if like_ids:
        queries += like_ids_each(index_dir, like_ids)
    return queries


def query_embedder(manifest: Manifest, device: str) -> Any:
    """The model the index was built with, to embed query images (fp16 falls back to fp32
    on the CPU)."""
    resolved = embedders.resolve_device(device)
    precision = manifest.precision
    if resolved == "cpu" and precision == "fp16":
        precision = "fp32"
    return embedders.load_for(manifest, resolved, precision)
