"""Bytes to model-ready pixels: the one place images are opened.

`load_file` reads a file once, hashes it, and decodes it; `decode_image` turns bytes into a
(H, W, 3) uint8 array cropped and resized exactly as the model's data config asks. Every way
a file can be bad ends as `BadImage` with a reason a person can act on, never as another
exception: Pillow's fuzzing names OSError, SyntaxError, MemoryError, ValueError,
NotImplementedError, OverflowError, EOFError and the decompression-bomb pair as the
exceptions bad input raises.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .. import defaults
from ..errors import BadImage
from ..specs import Preprocess

#: Decoders allowed to run (a smaller attack surface than every plugin Pillow has).
FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF")
#: Files larger than this are refused before being read into memory.
MAX_FILE_BYTES = 1 << 31

_BAD_INPUT = (
    OSError,
    SyntaxError,
    MemoryError,
    ValueError,
    NotImplementedError,
    OverflowError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class FileResult:
    """One file after reading: its identity as read, and pixels or an error (never both).

    `pixels` is (height, width, 3) uint8 of the Preprocess; `width`/`height` are the
    image's own size after EXIF orientation; `content_hash` is a 16-byte BLAKE2b of the bytes.
    """

    path: bytes
    size: int
    mtime_ns: int
    content_hash: bytes | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    pixels: np.ndarray | None = None
    error: str | None = None


def register_optional_plugins() -> None:
    """Enable HEIC/HEIF decoding when the optional pillow-heif package is installed."""
    try:
        from pillow_heif import register_heif_opener  # type: ignore[import-not-found]
    except ImportError:
        return
    register_heif_opener()


def hash_bytes(data: bytes) -> bytes:
    """The content hash stored per image (16-byte BLAKE2b)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def read_file(path: bytes) -> tuple[bytes, os.stat_result]:
    """Read a whole file; returns its bytes and the fstat of what was read.

    Raises BadImage for empty, oversized, vanished, unreadable or changing files.
    """
    try:
        with open(path, "rb") as fh:
            before = os.fstat(fh.fileno())
            if before.st_size > MAX_FILE_BYTES:
                raise BadImage(f"file is {before.st_size} bytes, larger than {MAX_FILE_BYTES}")
            data = fh.read()
            after = os.fstat(fh.fileno())
    except FileNotFoundError:
        raise BadImage("file vanished before it could be read; it is retried next run") from None
    except PermissionError:
        raise BadImage("permission denied; make the file readable and run again") from None
    except IsADirectoryError:
        raise BadImage("is a directory, not an image file") from None
    except OSError as exc:
        raise BadImage(f"cannot read file: {exc.strerror or exc}") from None
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(
        data
    ) != after.st_size:
        raise BadImage("file changed while being read; it is retried next run")
    if not data:
        raise BadImage("empty file")
    return data, after


def load_file(path: bytes, preprocess: Preprocess, max_megapixels: float) -> FileResult:
    """Read, hash and decode one file. Never raises for bad input: errors go in the result."""
    try:
        data, st = read_file(path)
    except BadImage as exc:
        return FileResult(path, 0, 0, None, error=str(exc))
    digest = hash_bytes(data)
    try:
        pixels, width, height, fmt = decode_image(data, preprocess, max_megapixels)
    except BadImage as exc:
        return FileResult(path, st.st_size, st.st_mtime_ns, digest, error=str(exc))
    return FileResult(path, st.st_size, st.st_mtime_ns, digest, width, height, fmt, pixels)


def decode_image(
    data: bytes, preprocess: Preprocess, max_megapixels: float = defaults.MAX_MEGAPIXELS
) -> tuple[np.ndarray, int, int, str]:
    """Decode image bytes into model-ready pixels.

    Returns (pixels (H, W, 3) uint8, width, height, format), where width/height are the
    image's size after EXIF orientation. Raises BadImage with a readable reason.
    """
    register_optional_plugins()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open(data, max_megapixels)
            width, height = _oriented_size(image)
            fmt = image.format or "unknown"
            if image.format == "JPEG" or image.format == "MPO":
                # libjpeg DCT scaling: decode at 1/2..1/8 scale, still >= the resize target.
                image.draft("RGB", (preprocess.resize, preprocess.resize))
            image.load()
            image = _orient(image)
            rgb = to_rgb(image)
            pixels = _resize_and_crop(rgb, preprocess)
    except BadImage:
        raise
    except _BAD_INPUT as exc:
        raise BadImage(_describe(exc)) from None
    return pixels, width, height, fmt


def _open(data: bytes, max_megapixels: float) -> Image.Image:
    cap = int(max_megapixels * 1_000_000)
    Image.MAX_IMAGE_PIXELS = cap  # Pillow's own guard, promoted to an error above
    try:
        image = Image.open(io.BytesIO(data), formats=_formats())
    except Image.UnidentifiedImageError:
        raise BadImage("not a supported image (unknown or corrupt header)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(_over_cap_message(None, max_megapixels)) from None
    w, h = image.size
    if w <= 0 or h <= 0:
        raise BadImage(f"image has no pixels ({w}x{h})")
    if w * h > cap:
        raise BadImage(_over_cap_message(w * h, max_megapixels))
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    return image


def _formats() -> list[str]:
    Image.init()
    return [f for f in FORMATS if f in Image.OPEN]


def _over_cap_message(pixels: int | None, max_megapixels: float) -> str:
    size = f"{pixels / 1e6:.1f} MP" if pixels else "over the cap"
    return (
        f"image is {size}, above the limit of {max_megapixels:g} MP; "
        "raise it with --max-megapixels if the file is trusted"
    )


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    w, h = image.size
    try:
        orientation = image.getexif().get(0x0112, 1)
    except _BAD_INPUT:
        return w, h
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _orient(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation; a broken EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image) or image
    except _BAD_INPUT:
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16-bit scaled (not clipped), alpha composited."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image)), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*defaults.ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale 16-bit, 32-bit integer or float grey values into 0..255."""
    values = values.astype(np.float64)
    top = float(values.max(initial=0.0))
    if top <= 1.0 and values.dtype.kind == "f":
        scale = 255.0
    elif top <= 255.0:
        scale = 1.0
    else:
        scale = 255.0 / 65535.0 if top <= 65535.0 else 255.0 / top
    return np.clip(values * scale + 0.5, 0, 255).astype(np.uint8)


def _resize_and_crop(image: Image.Image, preprocess: Preprocess) -> np.ndarray:
    """Shorter side to `resize`, then the centre crop (torchvision's rounding, as timm)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = preprocess.resize, int(preprocess.resize * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    resample = _RESAMPLE[preprocess.interpolation]
    if size != image.size:
        image = image.resize(size, resample)
    out_h, out_w = preprocess.height, preprocess.width
    if size[0] < out_w or size[1] < out_h:  # extreme aspect ratios: pad like CenterCrop
        image = ImageOps.pad(image, (max(size[0], out_w), max(size[1], out_h)), color=(0, 0, 0))
        size = image.size
    top = int(round((size[1] - out_h) / 2.0))
    left = int(round((size[0] - out_w) / 2.0))
    cropped = image.crop((left, top, left + out_w, top + out_h))
    return np.asarray(cropped, dtype=np.uint8).reshape(out_h, out_w, 3)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return "image is a decompression bomb (too many pixels); raise --max-megapixels"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode this image"
    text = str(exc).strip() or type(exc).__name__
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return f"truncated or corrupt image data ({text})"
    return f"cannot decode image: {text}"
