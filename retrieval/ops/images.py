"""Indexed images by catalogue id, for the faces that show them: their record, their
thumbnail and preview (through the thumbnail cache), and the files that failed.

Files are addressed by id only, never by a path a caller gives, so nothing outside the
index can be read through these. A picture is made from the file as it is now: when its
size and mtime are the ones indexed, the cache entry is looked up by the stored content
hash without reading the file; otherwise the file is read and hashed, so an edited file
gets a new entry (but a file replaced by a symbolic link is shown only while the link
leads to the indexed bytes). Decoding goes through the indexer's decoder
(`sources.thumbnail`): a file it would refuse raises BadImage with the same reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .. import defaults
from ..errors import BadImage, NotFound, UsageError
from ..pathnames import display, to_bytes
from ..reports import SKIP, JsonReport, json_field
from ..sources.decode import hash_bytes, over_cap_message, read_file
from ..sources.thumbnail import preview_jpeg, square_jpeg
from ..store.files import read_only_media
from ..store.index_dir import IndexDir
from ..store.thumbnails import ThumbnailCache, entry_key

#: Why a file that became a link to other bytes is not shown: anyone who can write in a
#: photo folder could otherwise show any image the server can read through its id.
_LINKED_ELSEWHERE = (
    "the file is a symbolic link now, to content that is not the indexed image; "
    "run `retrieval index` again to index what it points to"
)
#: SQLite's largest id: a bigger number cannot name a row.
_MAX_ID = 2**63 - 1


def _mtimes(mtime_ns: int) -> dict[str, Any]:
    """JSON keys of a modification time: UTC ISO 8601 to the second, and exact ns."""
    iso = datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc).isoformat(timespec="seconds")
    return {"mtime": iso, "mtime_ns": mtime_ns}


@dataclass(frozen=True)
class ImageRecord(JsonReport):
    """One searchable image: its catalogue `id` (a search result's `Hit.id`), `path` for
    people (escaped, see `retrieval.display`), `raw_path` (the file name's bytes), file
    `size` in bytes, `mtime_ns` (ns since the epoch, as indexed), `width` x `height` in
    pixels after EXIF orientation, Pillow `format` and `content_hash` (hex BLAKE2b-128)."""

    id: int
    path: str
    raw_path: bytes = json_field(json=SKIP)
    size: int = 0
    mtime_ns: int = json_field(0, keys=lambda r: _mtimes(r.mtime_ns))
    width: int = 0
    height: int = 0
    format: str = ""
    content_hash: str = ""

    @property
    def mtime(self) -> datetime:
        """The modification time as indexed (UTC)."""
        return datetime.fromtimestamp(self.mtime_ns / 1e9, tz=timezone.utc)


@dataclass(frozen=True)
class Failure(JsonReport):
    """A file that could not be indexed: its catalogue `id` (not searchable), `path` for
    people, `raw_path` (bytes) and the `reason` (what `info` and `check` show)."""

    id: int
    path: str
    reason: str
    raw_path: bytes = json_field(b"", json=SKIP)


def image_record(index_dir: IndexDir, image_id: int) -> ImageRecord:
    """The record of the searchable image `image_id`; raises NotFound, UsageError."""
    return _record(_row(index_dir, image_id))


def image_records(
    index_dir: IndexDir, offset: int, limit: int, under: str | None = None
) -> list[ImageRecord]:
    """The searchable images by id: skip `offset`, at most `limit`, only those under the
    folder `under` when given; raises UsageError."""
    for name, value, low in (("offset", offset, 0), ("limit", limit, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UsageError(f"{name} must be a whole number >= {low}, not {value!r}")
    folders = [to_bytes(under)] if under else []
    with index_dir.catalog.read() as conn:
        rows = index_dir.catalog.image_rows_page(conn, offset, limit, folders)
    return [_record(row) for row in rows]


def _record(row: Any) -> ImageRecord:
    return ImageRecord(
        id=row.id,
        path=display(row.path),
        raw_path=row.path,
        size=row.size,
        mtime_ns=row.mtime_ns,
        width=row.width or 0,
        height=row.height or 0,
        format=row.format or "",
        content_hash=(row.content_hash or b"").hex(),
    )


def failures(index_dir: IndexDir, limit: int | None = None) -> list[Failure]:
    """The failed files by path (at most `limit`), with their reasons."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise UsageError(f"limit must be a whole number >= 0, not {limit!r}")
    with index_dir.catalog.read() as conn:
        rows = index_dir.catalog.failure_rows(conn, limit)
    return [Failure(r.id, display(r.path), r.error or "", r.path) for r in rows]


def thumbnail(
    index_dir: IndexDir,
    image_id: int,
    size: int,
    max_bytes: int = defaults.THUMBNAIL_CACHE_BYTES,
    max_megapixels: float | None = None,
) -> bytes:
    """JPEG bytes of the centre square of image `image_id`, `size` x `size` pixels.

    `max_megapixels`: refuse larger images (None: the default cap, or the image's own size
    if it was indexed above it with a raised cap)."""
    kind = ("s", size)
    return _picture(index_dir, image_id, kind, square_jpeg, max_bytes, max_megapixels)


def preview(
    index_dir: IndexDir,
    image_id: int,
    size: int,
    max_bytes: int = defaults.THUMBNAIL_CACHE_BYTES,
    max_megapixels: float | None = None,
) -> bytes:
    """JPEG bytes of image `image_id`, oriented, longest side at most `size` pixels."""
    kind = ("p", size)
    return _picture(index_dir, image_id, kind, preview_jpeg, max_bytes, max_megapixels)


def cache_for(
    index_dir: IndexDir, max_bytes: int = defaults.THUMBNAIL_CACHE_BYTES
) -> ThumbnailCache:
    """The index's thumbnail cache; on read-only media it stores nothing."""
    writable = not read_only_media(index_dir.directory)
    return ThumbnailCache(index_dir.directory, writable=writable, max_bytes=max_bytes)


Render = Callable[[bytes, int, float], bytes]


def _picture(
    index_dir: IndexDir,
    image_id: int,
    kind: tuple[str, int],
    render: Render,
    max_bytes: int,
    max_megapixels: float | None,
) -> bytes:
    """A picture from the cache, else rendered from the file (and cached). Raises NotFound,
    UsageError (size), BadImage (the decoder's reason)."""
    _check_size(kind[1])
    row = _row(index_dir, image_id)
    pixels = (row.width or 0) * (row.height or 0)
    if max_megapixels is not None and pixels > max_megapixels * 1e6:  # even when cached
        raise BadImage(over_cap_message(pixels, max_megapixels))
    cache = cache_for(index_dir, max_bytes)
    digest = row.content_hash if _unchanged(row) else None
    if digest is not None:
        found = cache.get(entry_key(digest, *kind))
        if found is not None:
            return found
    data, _ = read_file(row.path)
    actual = hash_bytes(data)
    if actual != row.content_hash and os.path.islink(row.path):
        raise BadImage(_LINKED_ELSEWHERE)
    if actual != digest:  # the file was touched or edited since it was indexed
        found = cache.get(entry_key(actual, *kind))
        if found is not None:
            return found
    cap = defaults.MAX_MEGAPIXELS if max_megapixels is None else max_megapixels
    if max_megapixels is None and actual == row.content_hash:  # allowed when indexed
        cap = max(cap, math.ceil(pixels / 1e6))
    out = render(data, kind[1], cap)
    cache.put(entry_key(actual, *kind), out)
    return out


def _unchanged(row: Any) -> bool:
    """Whether the file still has the size and mtime it was indexed with (one stat)."""
    try:
        st = os.stat(row.path)
    except OSError:
        return False
    return row.content_hash is not None and (st.st_size, st.st_mtime_ns) == (
        row.size,
        row.mtime_ns,
    )


def _row(index_dir: IndexDir, image_id: int) -> Any:
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        raise UsageError(f"an image id is a whole number, not {image_id!r}")
    row = None
    if 0 <= image_id <= _MAX_ID:
        with index_dir.catalog.read() as conn:
            row = index_dir.catalog.image_row(conn, image_id)
    if row is None:
        raise NotFound(image_id)
    return row


def _check_size(size: int) -> None:
    low, high = defaults.PICTURE_SIZES
    if isinstance(size, bool) or not isinstance(size, int) or not low <= size <= high:
        raise UsageError(f"a picture size is {low} to {high} pixels, not {size!r}")
