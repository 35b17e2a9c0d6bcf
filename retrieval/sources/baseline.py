"""The decoders the benchmark compares against, and image sizes for its report.

`plain_decode` is the plain loop's decoder (`retrieval bench`'s `plain` stage);
`naive_decode` decodes at full resolution (no JPEG draft), for the report's draft-versus-full
timing of the largest JPEG. The product decodes with `decode`.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageOps

from ..specs import Preprocess
from .decode import read_file, to_rgb


def naive_decode(path: bytes, preprocess: Preprocess) -> np.ndarray | None:
    """(height, width, 3) uint8 pixels of `path`, or None when it cannot be read."""
    try:
        with Image.open(io.BytesIO(read_file(path)[0])) as image:
            image.load()  # every pixel: no DCT scaling
            rgb = to_rgb(ImageOps.exif_transpose(image) or image)
    except Exception:  # noqa: BLE001 - the baseline skips what it cannot read
        return None
    w, h = rgb.size
    scale = preprocess.resize / min(w, h)
    resample = Image.Resampling[preprocess.interpolation.upper()]
    rgb = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
    left = (rgb.width - preprocess.width) // 2
    top = (rgb.height - preprocess.height) // 2
    crop = rgb.crop((left, top, left + preprocess.width, top + preprocess.height))
    return np.asarray(crop, dtype=np.uint8)


def megapixels(path: bytes) -> float:
    """Width x height / 1e6 from the image header; raises whatever Pillow raises."""
    with Image.open(os.fsdecode(path)) as image:
        return image.width * image.height / 1e6


def plain_decode(path: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """(height, width, 3) uint8 pixels of `path` squashed to `size` (width, height), or None.

    The plain loop of issue 12, what a careful first script does: open, JPEG draft (DCT
    scaling to at least `size`), `convert("RGB")`, one bilinear resize; no hashing, no EXIF
    orientation, no alpha handling, no centre crop.
    """
    try:
        with Image.open(os.fsdecode(path)) as image:
            if image.format == "JPEG":
                image.draft("RGB", size)
            rgb = image.convert("RGB")
        return np.asarray(rgb.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)
    except Exception:  # noqa: BLE001 - the baseline skips what it cannot read
        return None
