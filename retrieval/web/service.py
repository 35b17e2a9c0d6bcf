"""What the pages and the API share: the index of a request, the two kinds of search, and
reading an upload within its cap."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, BinaryIO

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .. import (
    BadImage,
    CatalogCorrupt,
    ImageRecord,
    Index,
    IndexBusy,
    IndexNotFound,
    ModelError,
    NotFound,
    QueryImageError,
    QueryResult,
    RetrievalError,
    UsageError,
)
from .forms import search_filter
from .settings import Settings, too_large

#: Uploads are read this much at a time.
READ_CHUNK = 1 << 20


#: Library errors -> HTTP status (first match wins; other RetrievalErrors are 500).
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotFound, 404),
    (UsageError, 400),
    (BadImage, 400),
    (QueryImageError, 400),
    (IndexNotFound, 503),
    (IndexBusy, 503),
    (ModelError, 503),
    (CatalogCorrupt, 500),
)


class JSON(JSONResponse):
    """JSON with non-ASCII escaped: a file name that is not valid UTF-8 (kept as surrogate
    escapes) still makes valid JSON."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def index_of(request: Request) -> Index:
    """The served index: one reader shared by all requests (`Index(shared=True)`), each
    call a consistent snapshot, opened again when `retrieval index` has committed."""
    return request.app.state.index


def browse(
    request: Request, offset: int, limit: int, under: str | None
) -> tuple[list[ImageRecord], bool]:
    """A page of the indexed images by id (at most `limit`, skipping `offset`, under the
    folder `under` when given), and whether more follow."""
    found = index_of(request).images(offset, limit + 1, under=(under or "").strip() or None)
    return found[:limit], len(found) > limit


def like_search(request: Request, image_id: int, k: int, params: Mapping[str, Any]) -> QueryResult:
    """The k images nearest to indexed image `image_id` (its stored vector: no model run),
    itself left out; raises NotFound, UsageError (a bad filter)."""
    filters = search_filter(params)
    result = index_of(request).search(like_ids=[image_id], k=k, filters=filters)[0]
    if result.error is not None:
        raise NotFound(image_id)
    return result


class UploadGone(NotFound):
    """An upload id that is not (or no longer) kept: a 404 that says what to do."""

    def __init__(self, keep_s: float) -> None:
        self.image_id = None
        RetrievalError.__init__(
            self,
            f"the uploaded image is no longer kept (uploads are kept {keep_s / 60:g} minutes "
            "after their last use): upload it again",
        )


def upload_search(
    request: Request, data: bytes, name: str, k: int, params: Mapping[str, Any]
) -> tuple[QueryResult, str]:
    """The k images nearest to an uploaded image, embedded by the batcher, and the id under
    which its vector is kept to search again (`kept_search`); raises BadImage (not an
    image, too many pixels), UsageError (a bad filter: checked before embedding)."""
    filters = search_filter(params)
    query = request.app.state.batcher.embed(data, name)
    if query.error is not None:
        raise BadImage(query.error)
    upload_id = request.app.state.uploads.add(name, query.vector)
    found = index_of(request).search_vectors(query.vector[None], k=k, names=[name], filters=filters)
    return found[0], upload_id


def kept_search(
    request: Request, upload_id: str, k: int, params: Mapping[str, Any]
) -> tuple[QueryResult, str]:
    """Search again with a kept upload's vector (no model run): (result, its file name);
    raises NotFound when it is no longer kept, UsageError (a bad filter)."""
    filters = search_filter(params)
    kept = request.app.state.uploads.get(upload_id)
    if kept is None:
        raise UploadGone(settings_of(request).keep_uploads_s)
    name, vector = kept
    found = index_of(request).search_vectors(vector[None], k=k, names=[name], filters=filters)
    return found[0], name


def read_upload(stream: BinaryIO | None, settings: Settings) -> bytes:
    """The uploaded file's bytes; raises UsageError (none chosen, empty) or a 413 past the
    byte cap (read a chunk at a time, so a large upload is not held in memory whole)."""
    if stream is None:
        raise UsageError("choose an image to search with (drop, paste or pick a file)")
    chunks: list[bytes] = []
    size = 0
    while chunk := stream.read(min(READ_CHUNK, settings.max_upload_bytes + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > settings.max_upload_bytes:
            raise HTTPException(413, too_large(settings))
    if not size:
        raise UsageError("the uploaded file is empty: choose an image to search with")
    return b"".join(chunks)


def status_of(exc: Exception) -> int:
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
