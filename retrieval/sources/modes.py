"""Any Pillow mode to the 8-bit RGB (or grey "L") the resize works on.

16-bit and float grey are scaled into 0..255, never clipped; transparent images are
composited on the background that contrasts with their visible content.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .. import defaults


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16-bit scaled (not clipped), alpha composited on the
    background that contrasts with the visible content (`alpha_background`)."""
    image = to_rgb_or_grey(image)
    return image.convert("RGB") if image.mode == "L" else image


def to_rgb_or_grey(image: Image.Image) -> Image.Image:
    """`to_rgb`, except that grey images without transparency (modes 1, L, I;16*, I, F)
    become 8-bit "L", not RGB: resized as L and then made RGB they give exactly the pixels
    of RGB resized (Pillow resamples each channel alone), for a third of the work."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        # The mode fixes the range at 0..65535: a dark 16-bit image stays dark, not stretched.
        grey = _grey_values(image).astype(np.float32)
        grey *= 255.0 / 65535.0
        grey += 0.5
        return Image.fromarray(grey.astype(np.uint8), "L")
    if mode in ("I", "F"):
        return Image.fromarray(_to_uint8(_grey_values(image)), "L")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*alpha_background(rgba), 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("RGB", "L"):
        return image
    return image.convert("L" if mode == "1" else "RGB")


#: Side of the thumbnail whose pixels choose the background (cheap at 100 MP, and enough
#: to tell light content from dark).
_ALPHA_PROBE = 256


def alpha_background(rgba: Image.Image) -> tuple[int, int, int]:
    """The background an RGBA image is composited on (see defaults.ALPHA_BACKGROUND_*).

    Light visible content (alpha-weighted mean luminance >= ALPHA_LUMINANCE_SPLIT) gets
    the dark background, anything else the light one. Measured on a box-filtered thumbnail
    of at most _ALPHA_PROBE px a side (Pillow resamples RGBA premultiplied, so transparent
    pixels' colours do not leak into it).
    """
    w, h = rgba.size
    probe = rgba.resize((min(w, _ALPHA_PROBE), min(h, _ALPHA_PROBE)), Image.Resampling.BOX)
    values = np.asarray(probe, dtype=np.float64)
    alpha = values[..., 3]
    weight = float(alpha.sum())
    if weight <= 0.0:
        return defaults.ALPHA_BACKGROUND_FOR_DARK
    luminance = values[..., :3] @ np.array([0.299, 0.587, 0.114])
    mean = float((luminance * alpha).sum()) / weight
    if mean >= defaults.ALPHA_LUMINANCE_SPLIT:
        return defaults.ALPHA_BACKGROUND_FOR_LIGHT
    return defaults.ALPHA_BACKGROUND_FOR_DARK


#: numpy dtypes of Pillow's one-channel 16/32-bit modes, as `tobytes()` lays them out.
_GREY_DTYPES = {
    "I;16": "<u2",
    "I;16L": "<u2",
    "I;16B": ">u2",
    "I;16N": "=u2",
    "I": "=i4",
    "F": "=f4",
}


def _grey_values(image: Image.Image) -> np.ndarray:
    """(H, W) array of a 16/32-bit grey image (`np.asarray` would copy it twice)."""
    dtype = np.dtype(_GREY_DTYPES[image.mode])
    return np.frombuffer(image.tobytes(), dtype=dtype).reshape(image.height, image.width)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale 16-bit, 32-bit integer or float grey values into 0..255 (NaN and inf: 0).

    Floats within 0..1 are scaled by 255, values within 0..255 kept, larger ones scaled
    from the 16-bit range (or from the maximum when above it). float32, in place: a
    100 MP float image must not cost gigabytes of temporaries.
    """
    is_float = values.dtype.kind == "f"
    values = values.astype(np.float32)
    np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    top = float(values.max(initial=0.0))
    if top <= 1.0 and is_float:
        scale = 255.0
    elif top <= 255.0:
        scale = 1.0
    else:
        scale = 255.0 / 65535.0 if top <= 65535.0 else 255.0 / top
    values *= scale
    values += 0.5
    np.clip(values, 0, 255, out=values)
    return values.astype(np.uint8)
