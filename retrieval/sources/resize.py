"""Decoded image to the model's (H, W, 3) uint8 input: shorter side to `resize`, centre crop.

An image shrunk by `CROP_FIRST_FROM` or more has only its crop window resampled (Pillow's
`box`): the same filter at the same scale and centres, so the model input is the one a
whole-image resize and crop gives, give or take one grey level on a few pixels in 10,000
(rounding of the window's coordinates), at a fraction of the cost: a 16:9 wallpaper's
crop is 49% of its resized width, and the rows and columns outside it are never filtered.
tests/test_embeddings_unchanged.py holds the two to cosine >= 0.9999 on a trained network.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..specs import Preprocess

#: Images whose shorter side is at least this many times `resize` are resampled in their
#: crop window only. Smaller ones are resized whole and cropped, exactly as before (there
#: upscaling or a mild shrink would round differently, for little gain).
CROP_FIRST_FROM = 2.0

#: Resized images larger than this many resize x resize squares are not made whole.
MAX_RESIZED_AREA = 16

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def resize_and_crop(
    image: Image.Image, preprocess: Preprocess, crop_first: bool = True
) -> np.ndarray:
    """RGB or grey ("L") image -> (preprocess.height, preprocess.width, 3) uint8.

    Shorter side to `resize`, then the centre crop (torchvision's rounding, as timm). Only
    the crop window is resampled (Pillow's `box`) when `crop_first` and the image is shrunk
    by CROP_FIRST_FROM or more, and always beyond an aspect ratio of MAX_RESIZED_AREA:1 (a
    20 x 3,000,000 strip must not become a 700 MB intermediate). `crop_first=False`: the
    whole image is resized first (the reference the tests compare with). A crop larger than
    the resized image is zero-padded as torchvision's CenterCrop does.
    """
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = preprocess.resize, int(preprocess.resize * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    resample = RESAMPLE[preprocess.interpolation]
    out_h, out_w = preprocess.height, preprocess.width
    crop_w, crop_h = min(out_w, size[0]), min(out_h, size[1])
    left = int(round((size[0] - crop_w) / 2.0))
    top = int(round((size[1] - crop_h) / 2.0))
    whole = size[0] * size[1] <= MAX_RESIZED_AREA * preprocess.resize**2
    if whole and not (crop_first and short >= CROP_FIRST_FROM * preprocess.resize):
        if size != image.size:
            image = image.resize(size, resample)
        image = image.crop((left, top, left + crop_w, top + crop_h))
    else:  # the window only: may differ from the whole-image resize by +-1 level
        sx, sy = w / size[0], h / size[1]
        box = (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)
        image = image.resize((crop_w, crop_h), resample, box=box)
    if (crop_w, crop_h) != (out_w, out_h):
        canvas = Image.new(image.mode, (out_w, out_h), 0)
        canvas.paste(image, ((out_w - crop_w) // 2, (out_h - crop_h) // 2))
        image = canvas
    if image.mode != "RGB":  # grey: resampled as one channel, the same values as in RGB
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).reshape(out_h, out_w, 3)
