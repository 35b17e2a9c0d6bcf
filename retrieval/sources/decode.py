"""Bytes to model-ready pixels: the one place images are opened.

`load_file` reads a file once, hashes it, and decodes it; `decode_image` turns bytes into a
(H, W, 3) uint8 array cropped and resized exactly as the model's data config asks. Every way
a file can be bad ends as `BadImage` with a reason a person can act on, never as another
exception: Pillow's fuzzing names OSError, SyntaxError, MemoryError, ValueError,
NotImplementedError, OverflowError, EOFError and the decompression-bomb pair as the
exceptions bad input raises; anything else still ends as BadImage ("unexpected decoder
error"), and Pillow's warnings are ignored whatever the caller's filters (`-W error`).

Hostile input is bounded before it costs: images over the megapixel cap are refused from
the header (no pixels allocated); JPEGs with more than MAX_JPEG_SCANS scans are refused
(repeated progressive scans make libjpeg's time grow with scans x pixels); extreme aspect
ratios are resampled only inside the crop window; only regular files are read, opened
non-blocking (a FIFO or device swapped in after the scan neither blocks nor floods).

A file is read only if it is the one the scan found: the indexer opens it with O_NOFOLLOW
unless symbolic links are allowed (a link swapped in for an image after the scan is refused,
not followed out of the folder), and compares the opened file's (st_dev, st_ino) with the
scan's; either change is a per-file failure ("the file changed between scan and read").
Fuzzed by tests/test_hostile.py; the inputs that once broke it are in tests/corpus/.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import os
import re
import stat
import struct
import warnings
from collections.abc import Callable, Iterator
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
#: JPEGs with more scans are refused: each progressive scan re-reads every block, so a few
#: hundred KB of repeated scans can keep libjpeg busy for minutes (real photos have <= ~12).
MAX_JPEG_SCANS = 100

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

#: Resized images larger than this many resize x resize squares are not made whole.
_MAX_RESIZED_AREA = 16

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


@functools.cache
def register_optional_plugins() -> None:
    """Enable HEIC/HEIF decoding when the optional pillow-heif package is installed (once)."""
    try:
        from pillow_heif import register_heif_opener  # type: ignore[import-not-found]
    except ImportError:
        return
    register_heif_opener()


def hash_bytes(data: bytes) -> bytes:
    """The content hash stored per image (16-byte BLAKE2b)."""
    return hashlib.blake2b(data, digest_size=16).digest()


#: Start of the reason given for a file that is not the one the scan found.
CHANGED_SINCE_SCAN = "the file changed between scan and read"
_NOW_A_LINK = (
    f"{CHANGED_SINCE_SCAN} (it is a symbolic link now, and links are followed only with "
    "--follow-symlinks, in Python: IndexOptions(follow_symlinks=True)); skipped"
)
_NOW_ANOTHER = f"{CHANGED_SINCE_SCAN} (another file took its name); it is retried next run"


def read_file(
    path: bytes, *, follow_symlinks: bool = True, identity: tuple[int, int] | None = None
) -> tuple[bytes, os.stat_result]:
    """Read a whole regular file; returns its bytes and the fstat of what was read.

    Raises BadImage for empty, oversized, vanished, unreadable, changing or non-regular
    files (directories, FIFOs, devices: opened non-blocking and refused after fstat, so a
    FIFO or /dev/zero swapped in after the scan cannot block or flood the reader). With
    `follow_symlinks` False the file is opened with O_NOFOLLOW, so a symbolic link in its
    place is refused; `identity` is the scan's (st_dev, st_ino), which the opened file must
    have. (Query images follow links, as `open` does; the indexer passes both.)
    """
    try:
        with open(path, "rb", opener=_opener(follow_symlinks)) as fh:
            before = os.fstat(fh.fileno())
            if identity is not None and (before.st_dev, before.st_ino) != identity:
                raise BadImage(_NOW_ANOTHER)
            if not stat.S_ISREG(before.st_mode):
                raise BadImage("not a regular file (a FIFO, device or socket); skipped")
            if before.st_size > MAX_FILE_BYTES:
                raise BadImage(f"file is {before.st_size} bytes, larger than {MAX_FILE_BYTES}")
            data = fh.read(before.st_size + 1)  # one byte more shows a file still growing
            after = os.fstat(fh.fileno())
    except FileNotFoundError:
        raise BadImage("file vanished before it could be read; it is retried next run") from None
    except PermissionError:
        raise BadImage("permission denied; make the file readable and run again") from None
    except IsADirectoryError:
        raise BadImage("is a directory, not an image file") from None
    except OSError as exc:
        if not follow_symlinks and exc.errno in _LINK_REFUSED:
            raise BadImage(_NOW_A_LINK) from None
        raise BadImage(f"cannot read file: {exc.strerror or exc}") from None
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(
        data
    ) != after.st_size:
        raise BadImage("file changed while being read; it is retried next run")
    if not data:
        raise BadImage("empty file")
    return data, after


#: errno of open(O_NOFOLLOW) on a symbolic link: ELOOP (Linux, macOS), EMLINK (FreeBSD).
_LINK_REFUSED = (errno.ELOOP, errno.EMLINK)


def _opener(follow_symlinks: bool) -> Callable[[str | bytes, int], int]:
    extra = getattr(os, "O_NONBLOCK", 0)
    if not follow_symlinks:
        extra |= getattr(os, "O_NOFOLLOW", 0)
    return functools.partial(_open_with, extra)


def _open_with(extra: int, path: str | bytes, flags: int) -> int:
    return os.open(path, flags | extra)


def load_file(
    path: bytes,
    preprocess: Preprocess,
    max_megapixels: float,
    *,
    follow_symlinks: bool = False,
    identity: tuple[int, int] | None = None,
) -> FileResult:
    """Read, hash and decode one file. Never raises for bad input: errors go in the result.

    The indexer's reader: a symbolic link is refused unless `follow_symlinks`, and the file
    opened must have the scan's `identity` (st_dev, st_ino) when given (see `read_file`).
    A file that could not be read has size 0, mtime 0 and no hash, so the next run sees it
    as changed and tries again.
    """
    try:
        data, st = read_file(path, follow_symlinks=follow_symlinks, identity=identity)
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
    image's size after EXIF orientation. Raises BadImage with a readable reason, and
    nothing else, whatever the bytes: images over `max_megapixels` are refused from their
    header before any pixel is allocated; Pillow's warnings (corrupt EXIF, truncated tags)
    are ignored whatever the caller's warning filters; an exception outside the known set
    still ends as BadImage ("unexpected decoder error ...").
    """
    with _refusing_bad_input(max_megapixels):
        return _decode(data, preprocess, max_megapixels)


def decode_picture(
    data: bytes, max_side: int, max_megapixels: float = defaults.MAX_MEGAPIXELS
) -> Image.Image:
    """Decode image bytes for people to look at: an RGB image, EXIF orientation applied,
    aspect ratio kept, its longest side at most `max_side` pixels (never enlarged).

    Refuses exactly what `decode_image` refuses (same checks, same BadImage reasons)."""
    with _refusing_bad_input(max_megapixels):
        image = _open(data, max_megapixels)
        _refuse_scan_bombs(image, data, (max_side, max_side))
        image.load()
        rgb = to_rgb(_orient(image))
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return rgb


@contextlib.contextmanager
def _refusing_bad_input(max_megapixels: float) -> Iterator[None]:
    """Run a decode turning every failure into BadImage (see `decode_image`)."""
    register_optional_plugins()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(over_cap_message(_bomb_pixels(exc), max_megapixels)) from None
    except _BAD_INPUT as exc:
        raise BadImage(_describe(exc)) from None
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop a 100k-file run
        raise BadImage(f"{UNEXPECTED} ({type(exc).__name__}: {exc}); please report it") from None


#: Start of the reason given for an exception outside Pillow's documented set.
UNEXPECTED = "unexpected decoder error"


def _decode(
    data: bytes, preprocess: Preprocess, max_megapixels: float
) -> tuple[np.ndarray, int, int, str]:
    image = _open(data, max_megapixels)
    width, height = _oriented_size(image)
    fmt = image.format or "unknown"
    _refuse_scan_bombs(image, data, (preprocess.resize, preprocess.resize))
    image.load()
    image = _orient(image)
    rgb = to_rgb(image)
    return _resize_and_crop(rgb, preprocess), width, height, fmt


def _refuse_scan_bombs(image: Image.Image, data: bytes, target: tuple[int, int]) -> None:
    """For a JPEG: refuse too many scans, then ask libjpeg to decode at 1/2..1/8 scale
    (DCT scaling), still at least `target` (width, height)."""
    if image.format not in ("JPEG", "MPO"):
        return
    scans = data.count(b"\xff\xda")  # SOS markers (0xFFDA never occurs in scan data)
    if scans > MAX_JPEG_SCANS:
        raise BadImage(
            f"JPEG has {scans} scans, more than {MAX_JPEG_SCANS} (a decoding-time bomb); "
            "re-encode it if the file is trusted"
        )
    image.draft("RGB", target)


def _open(data: bytes, max_megapixels: float) -> Image.Image:
    cap = int(max_megapixels * 1_000_000)
    Image.MAX_IMAGE_PIXELS = cap  # Pillow's own guard (frames, GIF extents), an error here
    try:
        image = Image.open(io.BytesIO(data), formats=_formats())
    except Image.UnidentifiedImageError:
        raise BadImage("not a supported image (unknown or corrupt header)") from None
    w, h = image.size
    if w <= 0 or h <= 0:
        raise BadImage(f"image has no pixels ({w}x{h})")
    if w * h > cap:
        raise BadImage(over_cap_message(w * h, max_megapixels))
    return image


def _formats() -> list[str]:
    Image.init()
    return [f for f in FORMATS if f in Image.OPEN]


def _bomb_pixels(exc: BaseException) -> int | None:
    """The pixel count in Pillow's decompression-bomb message, if it has one."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    return int(match.group(1)) if match else None


def over_cap_message(pixels: int | None, max_megapixels: float) -> str:
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
    """Any Pillow mode to 8-bit RGB: 16-bit scaled (not clipped), alpha composited on the
    background that contrasts with the visible content (`alpha_background`)."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        # The mode fixes the range at 0..65535: a dark 16-bit image stays dark, not stretched.
        grey = _grey_values(image).astype(np.float32)
        grey *= 255.0 / 65535.0
        grey += 0.5
        return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
    if mode in ("I", "F"):
        return Image.fromarray(_to_uint8(_grey_values(image)), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*alpha_background(rgba), 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


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


def _resize_and_crop(image: Image.Image, preprocess: Preprocess) -> np.ndarray:
    """Shorter side to `resize`, then the centre crop (torchvision's rounding, as timm).

    Beyond an aspect ratio of `_MAX_RESIZED_AREA`:1 only the cropped window is resampled
    (Pillow's `box`), so a 20 x 3,000,000 strip does not become a 700 MB intermediate. A
    crop larger than the resized image is zero-padded as torchvision's CenterCrop does.
    """
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = preprocess.resize, int(preprocess.resize * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    resample = _RESAMPLE[preprocess.interpolation]
    out_h, out_w = preprocess.height, preprocess.width
    crop_w, crop_h = min(out_w, size[0]), min(out_h, size[1])
    left = int(round((size[0] - crop_w) / 2.0))
    top = int(round((size[1] - crop_h) / 2.0))
    if size[0] * size[1] <= _MAX_RESIZED_AREA * preprocess.resize**2:
        if size != image.size:
            image = image.resize(size, resample)
        image = image.crop((left, top, left + crop_w, top + crop_h))
    else:  # an extreme aspect ratio: resample only the window (may differ by +-1 level)
        sx, sy = w / size[0], h / size[1]
        box = (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)
        image = image.resize((crop_w, crop_h), resample, box=box)
    if (crop_w, crop_h) != (out_w, out_h):
        canvas = Image.new("RGB", (out_w, out_h), (0, 0, 0))
        canvas.paste(image, ((out_w - crop_w) // 2, (out_h - crop_h) // 2))
        image = canvas
    return np.asarray(image, dtype=np.uint8).reshape(out_h, out_w, 3)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "not enough memory to decode this image"
    text = str(exc).strip() or type(exc).__name__
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return f"truncated or corrupt image data ({text})"
    return f"cannot decode image: {text}"
