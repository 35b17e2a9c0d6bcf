"""Search by example: embed query images exactly as the index was built, find neighbours.

Queries can also be images already in the index (`like_vectors`: their stored vectors, no
model), and results can be restricted by a `SearchFilter` (folder, format, size, date): the
filter becomes an id set that FAISS applies inside the search, so a filter never leaves
fewer than k results when k images pass it.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .. import defaults
from ..errors import BadImage, QueryImageError, UsageError
from ..pathnames import display, printable, to_bytes, to_str
from ..reports import JsonReport, json_field
from ..sources.decode import MAX_FILE_BYTES, decode_image, read_file
from ..sources.formats import pillow_formats
from ..store.index_dir import IndexDir, Neighbour
from .indexing import Embeds

#: Above this k, searches count the searchable images first and ask for no more (FAISS
#: allocates k results per query up front: -k 2**31 aborted with std::bad_alloc).
COUNT_ABOVE_K = 1024
#: stdin is read this much at a time, so a bounded read never allocates the bound up front.
READ_CHUNK = 1 << 20

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _hits(results: list[Neighbour]) -> list[dict[str, Any]]:
    return [{"id": n.id, "path": to_str(n.path), "score": round(n.score, 6)} for n in results]


@dataclass(frozen=True)
class QueryResult(JsonReport):
    """The neighbours of one query, best first; `error` says why a query could not be used
    (then `results` is empty)."""

    query: str
    results: list[Neighbour] = json_field(json=_hits)
    error: str | None = json_field(None, omit_none=True)


@dataclass(frozen=True)
class QueryStream:
    """A query image read from an open binary stream (stdin for `retrieval search -`),
    at most MAX_FILE_BYTES of it; `name` labels its result."""

    stream: BinaryIO
    name: str = "-"


@dataclass(frozen=True)
class Query:
    """One query ready to search: its (d,) float32 vector, or the reason it has none.

    `own_id` is the catalogue id of a `like` query (left out of its own results), else -1.
    """

    name: str
    vector: np.ndarray | None
    own_id: int = -1
    error: str | None = None


def query_name(image: str | os.PathLike[str] | QueryStream) -> str:
    return image.name if isinstance(image, QueryStream) else os.fsdecode(image)


def embed_queries(
    model: Embeds, images: Sequence[str | os.PathLike[str]], max_megapixels: float
) -> np.ndarray:
    """(n, d) float32 query vectors; raises QueryImageError naming the first bad image."""
    queries = embed_each(model, images, max_megapixels)
    for query in queries:
        if query.error is not None:
            raise QueryImageError(query.error)
    return np.stack([q.vector for q in queries])


def embed_each(
    model: Embeds,
    images: Sequence[str | os.PathLike[str] | QueryStream],
    max_megapixels: float,
) -> list[Query]:
    """One Query per image, in order, embedded in one batch; an image that cannot be read or
    decoded gets its error instead of a vector."""
    pixels: list[np.ndarray] = []
    errors: list[str | None] = []
    for image in images:
        try:
            pixels.append(decode_image(_query_bytes(image), model.preprocess, max_megapixels)[0])
            errors.append(None)
        except QueryImageError as exc:
            errors.append(str(exc))
        except BadImage as exc:
            errors.append(f"cannot use query image {_shown(image)}: {exc}")
    xq = iter(model.embed(np.stack(pixels)) if pixels else [])
    return [
        Query(query_name(image), None if error else next(xq), error=error)
        for image, error in zip(images, errors, strict=True)
    ]


def _shown(image: str | os.PathLike[str] | QueryStream) -> str:
    return printable(image.name) if isinstance(image, QueryStream) else display(to_bytes(image))


def _query_bytes(image: str | os.PathLike[str] | QueryStream) -> bytes:
    """The bytes of a query image; raises QueryImageError (missing file, URL, text...)
    or BadImage (unreadable)."""
    if isinstance(image, QueryStream):
        return read_stream(image)
    path = to_bytes(image)
    if not os.path.lexists(path):
        raise QueryImageError(_missing_message(os.fsdecode(image), path))
    return read_file(path)[0]


def read_stream(query: QueryStream) -> bytes:
    """All of `query.stream`, at most MAX_FILE_BYTES, read a chunk at a time."""
    where = "stdin" if query.name == "-" else query.name
    chunks: list[bytes] = []
    size = 0
    while chunk := query.stream.read(min(READ_CHUNK, MAX_FILE_BYTES + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise BadImage(
                f"more than {MAX_FILE_BYTES} bytes on {where}; save the image to a file and "
                "search with that"
            )
    if not size:
        raise BadImage("empty input")
    return b"".join(chunks)


def _missing_message(given: str, path: bytes) -> str:
    """Why a query that is not a file cannot be used, with what to do instead."""
    if _URL.match(given):
        return (
            f"cannot use query image {printable(given)}: search takes example images, not "
            f"URLs; download the URL first, e.g. curl -sL {printable(shlex.quote(given))} | "
            "retrieval search -"
        )
    message = f"cannot use query image {display(path)}: no such file"
    extension = os.path.splitext(given)[1].lower()
    image_extension = extension in defaults.EXTENSIONS or extension in defaults.OPTIONAL_EXTENSIONS
    if not image_extension and (
        any(c.isspace() for c in given) or (os.sep not in given and not extension)
    ):
        message += (
            "; search takes example images, not text: give the path of an image that looks "
            "like what you want"
        )
    return message


@dataclass(frozen=True)
class SearchFilter:
    """Conditions every result must meet; None or () means no condition.

    `under`: folders (any of them); `formats`: Pillow names such as JPEG or PNG, or an
    extension (jpg, .tif), any case, normalised to Pillow's name; sizes in bytes;
    `modified_after` (inclusive) / `modified_before` (exclusive) in seconds since the epoch.
    Rows imported from .npy exports have no width, height or format.
    """

    under: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    min_width: int | None = None
    min_height: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    modified_after: float | None = None
    modified_before: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(canonical_format(f) for f in self.formats))

    @property
    def empty(self) -> bool:
        return self == SearchFilter()


def canonical_format(name: str) -> str:
    """Pillow's name for an image format given by name or extension, any case: jpg, .JPG,
    jpeg -> JPEG; tif -> TIFF. A name Pillow does not know comes back upper-cased."""
    upper = name.strip().upper()
    extensions, known = pillow_formats()
    if upper in known:
        return upper
    return extensions.get("." + upper.lstrip(".").lower(), upper)


def allowed_ids(index_dir: IndexDir, filters: SearchFilter | None) -> np.ndarray | None:
    """Sorted int64 ids passing `filters`, or None when there is nothing to filter.

    A format Pillow does not know and a folder holding no indexed image add a notice to
    `index_dir.notices` (a typo otherwise reads as "no results")."""
    where = conditions(filters)
    if filters is None or where is None:
        return None
    folders = where["under"]
    with index_dir.catalog.read() as conn:
        for folder in folders:
            if not len(index_dir.catalog.filter_ids(conn, under=[folder])):
                index_dir.notices.append(
                    f"no indexed image is under {display(folder)}; check the folder "
                    "(see `retrieval info` for what the index holds)"
                )
        allow = index_dir.catalog.filter_ids(conn, **where)
    known = pillow_formats()[1] if filters.formats else frozenset()
    for name in filters.formats:
        if name not in known:
            common = sorted({pillow_formats()[0].get(e, "") for e in defaults.EXTENSIONS} - {""})
            index_dir.notices.append(
                f"--image-format {printable(name.lower())} is not an image format (known: "
                f"{', '.join(common)}, ...); no image matches it"
            )
    return allow


def conditions(filters: SearchFilter | None) -> dict[str, Any] | None:
    """`filters` as `Catalog.filter_ids`'s keywords (folders as raw bytes, times in ns), or
    None when there is nothing to filter."""
    if filters is None or filters.empty:
        return None

    def ns(seconds: float | None) -> int | None:
        return None if seconds is None else int(seconds * 1e9)

    return {
        "under": [to_bytes(folder) for folder in filters.under],
        "formats": filters.formats,
        "min_width": filters.min_width,
        "min_height": filters.min_height,
        "min_size": filters.min_size,
        "max_size": filters.max_size,
        "mtime_after_ns": ns(filters.modified_after),
        "mtime_before_ns": ns(filters.modified_before),
    }


def like_each(index_dir: IndexDir, images: Sequence[str | os.PathLike[str]]) -> list[Query]:
    """One Query per indexed image, from its stored vector (no model, no file read); an
    image the index does not hold gets an error instead."""
    dim = index_dir.require_manifest().dim
    paths = [to_bytes(image) for image in images]
    with index_dir.catalog.read() as conn:
        ids = index_dir.catalog.ids_for_paths(conn, paths)
        found = index_dir.catalog.vectors_for(conn, list(ids.values()), dim)
    queries = []
    for image, path in zip(images, paths, strict=True):
        if path in ids:
            vector = np.asarray(found[ids[path]], dtype=np.float32)
            queries.append(Query(os.fsdecode(image), vector, ids[path]))
        else:
            error = (
                f"{display(path)} is not in the index at {index_dir.directory}; search with "
                f"the image file itself (`retrieval search {display(path)}`) or index it first"
            )
            queries.append(Query(os.fsdecode(image), None, error=error))
    return queries


def like_ids_each(index_dir: IndexDir, ids: Sequence[int]) -> list[Query]:
    """One Query per catalogue id, from its stored vector (no model, no file read), named by
    the image's path; an id the index does not hold (or holds as a failed file) gets an
    error instead."""
    dim = index_dir.require_manifest().dim
    wanted = [int(i) for i in ids]
    with index_dir.catalog.read() as conn:
        found = index_dir.catalog.vectors_for(conn, wanted, dim)
        paths = index_dir.catalog.paths(conn, list(found))
    queries = []
    for image_id in wanted:
        if image_id in found:
            vector = np.asarray(found[image_id], dtype=np.float32)
            queries.append(Query(to_str(paths[image_id]), vector, image_id))
        else:
            error = (
                f"no indexed image has id {image_id} in the index at {index_dir.directory}; "
                "ids come from search results or `retrieval search --format json`"
            )
            queries.append(Query(f"#{image_id}", None, error=error))
    return queries


def check_limits(k: int, min_score: float | None) -> None:
    """Raise UsageError for k < 1 or a min_score outside the cosine's range [-1, 1]."""
    if k < 1:
        raise UsageError(f"-k must be at least 1, not {k}")
    if min_score is not None and not -1.0 <= min_score <= 1.0:  # NaN fails too
        raise UsageError(
            f"min_score must be a cosine between -1 and 1, not {min_score:g}; "
            "scores are cosines of L2-normalised embeddings"
        )


def search_queries(
    index_dir: IndexDir,
    queries: Sequence[Query],
    k: int = defaults.TOP_K,
    min_score: float | None = None,
    filters: SearchFilter | None = None,
) -> list[QueryResult]:
    """Results for each query, in order, the usable ones in one batched search; a query
    that carries an error gets a result with that error and no hits."""
    usable = [q for q in queries if q.vector is not None]
    found: list[QueryResult] = []
    if usable:
        found = search_vectors(
            index_dir,
            np.stack([q.vector for q in usable]),
            [q.name for q in usable],
            k,
            min_score,
            filters,
            [q.own_id for q in usable] if any(q.own_id >= 0 for q in usable) else None,
        )
    else:
        check_limits(k, min_score)
    results = iter(found)
    return [
        next(results) if q.vector is not None else QueryResult(q.name, [], q.error) for q in queries
    ]


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
    out of its results (a `--like` query does not find itself). k is capped at the number
    of images that can be found, so any k is safe.
    """
    check_limits(k, min_score)
    allow = allowed_ids(index_dir, filters)
    k = _searchable(index_dir, k, allow)
    extra = 1 if own_ids is not None else 0
    if k == 0:
        return [QueryResult(name, []) for name in names]
    xq = np.asarray(xq, dtype=np.float32)
    found = index_dir.search(xq, k + extra, allow=allow, where=conditions(filters))
    results = []
    for row, (name, hits) in enumerate(zip(names, found, strict=True)):
        if own_ids is not None:
            hits = [h for h in hits if h.id != own_ids[row]]
        hits = hits[:k]
        if min_score is not None:
            hits = [h for h in hits if h.score >= min_score]
        results.append(QueryResult(name, hits))
    return results


def _searchable(index_dir: IndexDir, k: int, allow: np.ndarray | None) -> int:
    """k, capped at the number of images a search could return (0 when there are none)."""
    if allow is not None:
        k = min(k, len(allow))
    if k > COUNT_ABOVE_K:
        with index_dir.catalog.read() as conn:
            k = min(k, index_dir.catalog.counts(conn)["ok"])
    return k
