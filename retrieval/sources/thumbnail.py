"""Small JPEG previews of indexed images, for reports people read (the `dups` HTML page).

Decoded by the indexer's own decoder (`decode.read_file` + `decode.decode_image`), so the
files it refuses (decompression bombs, JPEG scan bombs, truncated, non-regular files) are
refused here the same way, with the same reasons.
"""

from __future__ import annotations

import io

from PIL import Image

from .. import defaults
from ..specs import Preprocess
from .decode import decode_image, read_file

#: Side of the square preview, in pixels, and its JPEG quality.
THUMBNAIL_SIZE = 128
THUMBNAIL_QUALITY = 80


def thumbnail_jpeg(
    path: bytes,
    max_megapixels: float = defaults.MAX_MEGAPIXELS,
    size: int = THUMBNAIL_SIZE,
) -> bytes:
    """JPEG bytes of the centre square of the image at `path`, `size` x `size` pixels.

    Raises BadImage (with the decoder's reason) for a file that cannot be read or decoded."""
    data, _ = read_file(path)
    preprocess = Preprocess(size, size, size, "bicubic", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    pixels, _, _, _ = decode_image(data, preprocess, max_megapixels)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=THUMBNAIL_QUALITY)
    return out.getvalue()
