"""What a `retrieval serve` process is started with."""

from __future__ import annotations

from dataclasses import dataclass

from .. import defaults

#: Uploads larger than this are refused with 413 (bytes).
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
#: Uploads that arrive within this many seconds of each other are embedded in one call.
BATCH_WAIT = 0.005
#: At most this many uploads per model call.
MAX_BATCH = 16
#: Thumbnail and preview edge lengths a client may ask for (pixels), bounding the cache.
THUMB_SIZES = (128, 256, 512)
PREVIEW_SIZES = (512, 1024, 2048)
#: Results per search on the pages unless k is given, and the most anyone may ask for.
PAGE_K = 24
MAX_K = 500
#: Images per page of /browse, and the default page of GET /api/images.
BROWSE_PAGE = 48
#: Nearest images shown on an image's page.
IMAGE_PAGE_K = 12
#: Uploaded queries kept (their vectors, in memory) so a page can refine their search, and
#: for how long after their last use (seconds).
KEPT_UPLOADS = 64
KEEP_UPLOADS_S = 15 * 60.0
#: The cookie that carries the access token after `?token=` was given once.
TOKEN_COOKIE = "retrieval_token"


@dataclass(frozen=True)
class Settings:
    """index_dir: the index served (opened per request, so a running `retrieval index`
    is seen when it commits); token: required on every request when not None; device: where
    uploads are embedded; max_upload_bytes / max_megapixels: upload caps (the megapixel cap
    is the indexer's); warm: load the model at start instead of on the first upload;
    kept_uploads / keep_uploads_s: how many uploaded queries are kept to refine, how long."""

    index_dir: str | None = None
    token: str | None = None
    device: str = "auto"
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_megapixels: float = defaults.MAX_MEGAPIXELS
    batch_wait: float = BATCH_WAIT
    max_batch: int = MAX_BATCH
    warm: bool = True
    kept_uploads: int = KEPT_UPLOADS
    keep_uploads_s: float = KEEP_UPLOADS_S


def too_large(settings: Settings) -> str:
    """The message of a 413: the cap, and what to do."""
    megabytes = settings.max_upload_bytes / 1024 / 1024
    return (
        f"the upload is larger than {megabytes:g} MB, the most this server accepts; "
        "use a smaller copy of the image, or start the server with a larger --max-upload"
    )
