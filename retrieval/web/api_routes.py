"""The JSON API under /api/: what every page shows, for programs. Errors are
{"error": message} with a 4xx/5xx status; files are reached by catalogue id only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from .. import UsageError, defaults
from .forms import top_k
from .service import (
    JSON,
    browse,
    index_of,
    kept_search,
    like_search,
    read_upload,
    settings_of,
    upload_search,
)
from .settings import BROWSE_PAGE, IMAGE_PAGE_K, MAX_K, PREVIEW_SIZES, THUMB_SIZES

router = APIRouter(prefix="/api", tags=["api"])
#: Browsers may keep pictures an hour: an id's picture changes only when its file does.
PICTURE_HEADERS = {"Cache-Control": "private, max-age=3600"}

K = Annotated[int, Query(ge=1, le=MAX_K, description="results, best first")]
Text = Annotated[str | None, Query()]


FormText = Annotated[str | None, Form()]


def _filters(**given: Any) -> dict[str, Any]:
    return {name: value for name, value in given.items() if value is not None}


def _query_filters(
    under: Text = None,
    format: Text = None,
    min_width: Text = None,
    min_height: Text = None,
    min_size: Text = None,
    max_size: Text = None,
    modified_after: Text = None,
    modified_before: Text = None,
) -> dict[str, Any]:
    """The filters `search` has, as query parameters (those given only)."""
    return _filters(**locals())


def _form_filters(
    under: FormText = None,
    format: FormText = None,
    min_width: FormText = None,
    min_height: FormText = None,
    min_size: FormText = None,
    max_size: FormText = None,
    modified_after: FormText = None,
    modified_before: FormText = None,
) -> dict[str, Any]:
    """The same filters as form fields, beside an uploaded image."""
    return _filters(**locals())


QueryFilters = Annotated[dict[str, Any], Depends(_query_filters)]
FormFilters = Annotated[dict[str, Any], Depends(_form_filters)]


@router.get("/info", summary="What `retrieval info` shows")
def info(request: Request) -> dict[str, Any]:
    return index_of(request).info()


@router.get("/failures", summary="Files that could not be indexed, with the reason")
def failures(
    request: Request, limit: Annotated[int | None, Query(ge=1)] = None
) -> list[dict[str, Any]]:
    return [f.to_dict() for f in index_of(request).failures(limit)]


@router.get("/images", summary="The indexed images, a page at a time, by id")
def images(
    request: Request,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_K)] = BROWSE_PAGE,
    under: Text = None,
) -> dict[str, Any]:
    found, more = browse(request, offset, limit, under)
    return {
        "images": [r.to_dict() for r in found],
        "offset": offset,
        "next_offset": offset + limit if more else None,
    }


@router.get("/images/{image_id}", summary="An indexed image's metadata")
def image(request: Request, image_id: int) -> dict[str, Any]:
    return index_of(request).image(image_id).to_dict()


@router.get("/images/{image_id}/thumbnail", summary="A square JPEG thumbnail (cached)")
def thumbnail(
    request: Request, image_id: int, size: Annotated[int, Query()] = THUMB_SIZES[1]
) -> Response:
    _check_size(size, THUMB_SIZES)
    data = index_of(request).thumbnail(image_id, size)
    return Response(data, media_type="image/jpeg", headers=PICTURE_HEADERS)


@router.get("/images/{image_id}/preview", summary="A larger JPEG, orientation applied")
def preview(
    request: Request, image_id: int, size: Annotated[int, Query()] = PREVIEW_SIZES[1]
) -> Response:
    _check_size(size, PREVIEW_SIZES)
    data = index_of(request).preview(image_id, size)
    return Response(data, media_type="image/jpeg", headers=PICTURE_HEADERS)


@router.get("/images/{image_id}/similar", summary="More like this: by stored vector, no model")
def similar(
    request: Request,
    image_id: int,
    params: QueryFilters,
    k: K = IMAGE_PAGE_K,
) -> dict[str, Any]:
    return like_search(request, image_id, k, params).to_dict()


@router.post("/search", summary="Search with an uploaded image (multipart field `image`)")
def search_upload(
    request: Request,
    image: Annotated[UploadFile, File(description="the query image")],
    params: FormFilters,
    k: Annotated[str | None, Form()] = None,
) -> dict[str, Any]:
    data = read_upload(image.file, settings_of(request))
    name = image.filename or "upload"
    result, upload_id = upload_search(request, data, name, top_k(k, defaults.TOP_K), params)
    return {**result.to_dict(), "upload_id": upload_id}


@router.get(
    "/uploads/{upload_id}/similar",
    summary="Search again with an uploaded image (its kept vector; `upload_id` from POST search)",
)
def search_upload_again(
    request: Request,
    upload_id: str,
    params: QueryFilters,
    k: K = defaults.TOP_K,
) -> dict[str, Any]:
    return kept_search(request, upload_id, k, params)[0].to_dict()


@router.get("/dups", summary="Groups of near-duplicates, suggested keeper first (no changes)")
def dups(
    request: Request,
    threshold: Annotated[float, Query(gt=0, le=1)] = defaults.DUPS_THRESHOLD,
    under: Text = None,
) -> Response:
    report = index_of(request).dups(threshold=threshold, under=[under] if under else [])
    return _json_download(report.to_dict(), request.query_params.get("download"))


def _json_download(content: dict[str, Any], download: str | None) -> Response:
    headers = {}
    if download:
        headers["Content-Disposition"] = 'attachment; filename="retrieval-dups-plan.json"'
    return JSON(content, headers=headers)


def _check_size(size: int, allowed: tuple[int, ...]) -> None:
    if size not in allowed:
        raise UsageError(f"size must be one of {', '.join(map(str, allowed))} pixels, not {size}")
