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
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .. import defaults
from ..errors import BadImage
from ..specs import Preprocess
from .modes import to_rgb, to_rgb_or_grey
from .resize import resize_and_crop

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


def _is_scanned(st: os.stat_result, device: int | None, inode: int) -> bool:
    return st.st_ino == inode and (device is None or st.st_dev == device)


def read_file(
    path: bytes, *, follow_symlinks: bool = True, identity: tuple[int | None, int] | None = None
) -> tuple[bytes, os.stat_result]:
    """Read a whole regular file; returns its bytes and the fstat of what was read.

    Raises BadImage for empty, oversized, vanished, unreadable, changing or non-regular
    files (directories, FIFOs, devices: opened non-blocking and refused after fstat, so a
    FIFO or /dev/zero swapped in after the scan cannot block or flood the reader). With
    `follow_symlinks` False the file is opened with O_NOFOLLOW, so a symbolic link in its
    place is refused; `identity` is the scan's (st_dev, st_ino), which the opened file must
    have (st_dev None: any device, for a reader on another machine than the scan's, where a
    shared filesystem has other device numbers). (Query images follow links, as `open` does;
    the indexer passes both.)
    """
    try:
        with open(path, "rb", opener=_opener(follow_symlinks)) as fh:
            before = os.fstat(fh.fileno())
            if identity is not None and not _is_scanned(before, *identity):
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
    identity: tuple[int | None, int] | None = None,
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
    data: bytes,
    preprocess: Preprocess,
    max_megapixels: float = defaults.MAX_MEGAPIXELS,
    *,
    shortcuts: bool = True,
) -> tuple[np.ndarray, int, int, str]:
    """Decode image bytes into model-ready pixels.

    Returns (pixels (H, W, 3) uint8, width, height, format), where width/height are the
    image's size after EXIF orientation. Raises BadImage with a readable reason, and
    nothing else, whatever the bytes: images over `max_megapixels` are refused from their
    header before any pixel is allocated; Pillow's warnings (corrupt EXIF, truncated tags)
    are ignored whatever the caller's warning filters; an exception outside the known set
    still ends as BadImage ("unexpected decoder error ..."). With `shortcuts`
    (the default) grey images are resized as one channel and a large image's crop window
    alone (see `resize`); False: RGB first, the whole image resized, then cropped (the
    reference tests/test_embeddings_unchanged.py compares with).
    """
    with _refusing_bad_input(max_megapixels):
        return _decode(data, preprocess, max_megapixels, shortcuts)


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
        _check_cap(image, max_megapixels)
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
    data: bytes, preprocess: Preprocess, max_megapixels: float, shortcuts: bool
) -> tuple[np.ndarray, int, int, str]:
    image = _open(data, max_megapixels)
    width, height = _oriented_size(image)
    fmt = image.format or "unknown"
    _refuse_scan_bombs(image, data, (preprocess.resize, preprocess.resize))
    image.load()
    _check_cap(image, max_megapixels)
    image = _orient(image)
    if shortcuts:
        pixels = resize_and_crop(to_rgb_or_grey(image), preprocess)
    else:
        pixels = resize_and_crop(to_rgb(image), preprocess, crop_first=False)
    return pixels, width, height, fmt


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
    _raise_pillow_guard(cap)
    try:
        image = Image.open(io.BytesIO(data), formats=_formats())
    except Image.UnidentifiedImageError:
        raise BadImage("not a supported image (unknown or corrupt header)") from None
    w, h = image.size
    if w <= 0 or h <= 0:
        raise BadImage(f"image has no pixels ({w}x{h})")
    _check_cap(image, max_megapixels)
    return image


def _check_cap(image: Image.Image, max_megapixels: float) -> None:
    """Refuse an image over this call's cap. Called after opening and again after loading:
    Pillow grows a GIF's size to a frame's extent while it reads frames."""
    w, h = image.size
    if w * h > int(max_megapixels * 1_000_000):
        raise BadImage(over_cap_message(w * h, max_megapixels))


#: Serialises raising Pillow's guard, so two raises cannot leave the smaller one behind.
_GUARD_LOCK = threading.Lock()


def _raise_pillow_guard(cap: int) -> None:
    """Make Pillow's process-wide bomb guard (`Image.MAX_IMAGE_PIXELS`: image, frame and
    tile extents) at least `cap`. It is only ever raised, never lowered: threads decoding
    with different caps (a server's uploads and thumbnails) must not refuse each other's
    images. Each call's own cap is enforced by `_check_cap`, so Pillow's guard only bounds
    what is allocated before that check, by the largest cap this process has used."""
    current = Image.MAX_IMAGE_PIXELS
    if current is None or current >= cap:
        return
    with _GUARD_LOCK:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and current < cap:
            Image.MAX_IMAGE_PIXELS = cap


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


#: EXIF orientations that move pixels (1 is upright; others are not defined).
_TRANSPOSED = (2, 3, 4, 5, 6, 7, 8)


def _orient(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation; a broken EXIF block leaves the image as stored. An upright
    image is returned as it is (`exif_transpose` would copy it: 50 ms at 24 MP)."""
    try:
        if image.getexif().get(0x0112, 1) not in _TRANSPOSED:
            return image
        return ImageOps.exif_transpose(image) or image
    except _BAD_INPUT:
        return image


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "not enough memory to decode this image"
    text = str(exc).strip() or type(exc).__name__
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return f"truncated or corrupt image data ({text})"
    return f"cannot decode image: {text}"
