"""JPEG pictures of indexed images for people: square thumbnails and previews.

Decoded by the indexer's own decoder (`decode.decode_image`, `decode.decode_picture`), so
the files it refuses (decompression bombs, JPEG scan bombs, truncated, non-regular files) are
refused here the same way, with the same reasons.
"""

from __future__ import annotations

import io

from PIL import Image

from .. import defaults
from ..specs import Preprocess
from .decode import decode_image, decode_picture

#: JPEG quality of thumbnails (small, looked at in a grid) and previews (looked at alone).
THUMBNAIL_QUALITY = 80
PREVIEW_QUALITY = 85


def square_jpeg(data: bytes, size: int, max_megapixels: float = defaults.MAX_MEGAPIXELS) -> bytes:
    """JPEG bytes of the centre square of the image in `data` (file bytes), `size` x `size`
    pixels, EXIF orientation applied. Raises BadImage."""
    preprocess = Preprocess(size, size, size, "bicubic", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    pixels, _, _, _ = decode_image(data, preprocess, max_megapixels)
    return _jpeg(Image.fromarray(pixels), THUMBNAIL_QUALITY)


def preview_jpeg(data: bytes, size: int, max_megapixels: float = defaults.MAX_MEGAPIXELS) -> bytes:
    """JPEG bytes of the whole image in `data` (file bytes), EXIF orientation applied, aspect
    ratio kept, longest side at most `size` pixels (a smaller image keeps its size).
    Raises BadImage."""
    return _jpeg(decode_picture(data, size, max_megapixels), PREVIEW_QUALITY)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()
