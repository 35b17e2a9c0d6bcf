"""The HTML pages: Search, Browse, Image, Duplicates, Index, and the API's own docs page.

Rendered on the server (a page works without JavaScript; app.js only adds drag-and-drop,
paste and the slider's live value). A problem with what was asked (a broken upload, a bad
filter) is shown on the page that was asked for, above its form.
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from .. import QueryResult, RetrievalError, UsageError, defaults
from .forms import FILTER_FIELDS, clean, search_filter, top_k
from .service import (
    browse,
    index_of,
    kept_search,
    like_search,
    read_upload,
    settings_of,
    status_of,
    upload_search,
)
from .settings import BROWSE_PAGE, IMAGE_PAGE_K, MAX_K, PAGE_K

router = APIRouter(include_in_schema=False)
#: Formats offered by the search form's menu (any Pillow name works through the API).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF")
#: Groups drawn on the duplicates page (the JSON export has them all).
SHOWN_GROUPS = 200
#: Failed files listed on the index page.
SHOWN_FAILURES = 500


def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    return request.app.state.templates.TemplateResponse(
        request, template, context, status_code=status
    )


def _search_page(
    request: Request,
    params: dict[str, Any],
    result: QueryResult | None = None,
    query: dict[str, Any] | None = None,
    error: RetrievalError | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "search.html",
        status=status_of(error) if error is not None else status,
        result=result,
        query=query or {},
        error=str(error) if error is not None else None,
        k=params.get("k") or PAGE_K,
        filters=clean(params),
        filter_fields=FILTER_FIELDS,
        formats=FORMATS,
        filter_query=urllib.parse.urlencode(clean(params)),
    )


@router.get("/")
def search_page(request: Request) -> Response:
    """Search: ?like=ID (more like an indexed image), ?upload=ID (an uploaded image again,
    its kept vector) or ?path=PATH (an indexed image by its path), with k and the filters;
    with none, just the form."""
    params = dict(request.query_params)
    result = query = None
    try:
        k = top_k(params.get("k"), PAGE_K)
        if params.get("like", "").strip():
            image_id = _id(params["like"])
            result = like_search(request, image_id, k, params)
            query = {"id": image_id, "name": result.query}
        elif params.get("upload", "").strip():
            result, name = kept_search(request, params["upload"].strip(), k, params)
            query = {"name": name, "upload": params["upload"].strip()}
        elif params.get("path", "").strip():
            path = params["path"].strip()
            result = index_of(request).search(like=[path], k=k, filters=search_filter(params))[0]
            query = {"name": path, "error": result.error}
    except RetrievalError as exc:
        return _search_page(request, params, error=exc)
    return _search_page(request, params, result, query)


@router.post("/search")
async def search_upload_page(request: Request) -> Response:
    """Search with the uploaded image of the form (field `image`)."""
    form = await request.form()
    params = {name: value for name, value in form.items() if isinstance(value, str)}
    upload = form.get("image")
    try:
        k = top_k(params.get("k"), PAGE_K)
        stream = upload.file if isinstance(upload, UploadFile) and upload.filename else None
        data = read_upload(stream, settings_of(request))
        name = upload.filename if isinstance(upload, UploadFile) else "upload"
        found = await run_in_threadpool(upload_search, request, data, name, k, params)
    except RetrievalError as exc:
        return _search_page(request, params, error=exc)
    result, upload_id = found
    return _search_page(request, params, result, {"name": name, "upload": upload_id})


@router.get("/image/{image_id}")
def image_page(request: Request, image_id: int) -> Response:
    """An image: larger preview, metadata, nearest images (stored vector, no model)."""
    record = index_of(request).image(image_id)
    nearest = like_search(request, image_id, IMAGE_PAGE_K, {})
    return render(request, "image.html", record=record, result=nearest)


@router.get("/browse")
def browse_page(
    request: Request,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_K)] = BROWSE_PAGE,
    under: str = "",
) -> Response:
    """The indexed images as a thumbnail grid, a page at a time (by id); a click is "more
    like this" (`/?like=ID`): the picker for "search with an indexed image"."""
    found, more = browse(request, offset, limit, under)

    def page_at(start: int) -> str:
        return "/browse?" + urllib.parse.urlencode(
            {"offset": start, "limit": limit, **({"under": under} if under else {})}
        )

    return render(
        request,
        "browse.html",
        images=found,
        under=under,
        offset=offset,
        limit=limit,
        next_page=page_at(offset + limit) if more else None,
        previous_page=page_at(max(0, offset - limit)) if offset else None,
    )


@router.get("/dups")
def dups_page(request: Request) -> Response:
    """Groups of near-duplicates at a threshold, suggested keepers marked; changes nothing."""
    raw = request.query_params.get("threshold", "")
    error = None
    try:
        threshold = float(raw) if raw.strip() else defaults.DUPS_THRESHOLD
        report = index_of(request).dups(threshold=threshold)
    except (ValueError, RetrievalError) as exc:
        threshold = defaults.DUPS_THRESHOLD
        report = index_of(request).dups(threshold=threshold)
        error = str(exc) if isinstance(exc, RetrievalError) else f"not a threshold: {raw!r}"
    return render(
        request,
        "dups.html",
        status=400 if error else 200,
        report=report,
        groups=report.groups[:SHOWN_GROUPS],
        threshold=threshold,
        error=error,
    )


@router.get("/index")
def index_page(request: Request) -> Response:
    """What `retrieval info` shows, and the files that could not be indexed."""
    index = index_of(request)
    return render(
        request,
        "index.html",
        info=index.info(),
        failures=index.failures(SHOWN_FAILURES),
        shown_failures=SHOWN_FAILURES,
    )


@router.get("/api/docs")
def api_docs(request: Request) -> Response:
    """The OpenAPI description of /api/, drawn here (FastAPI's own page needs a CDN)."""
    spec = request.app.openapi()
    return render(request, "api.html", spec=spec)


def _id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"an image id is a whole number, not {text!r}") from None
