"""Regenerate the regression corpus of bad image files in tests/corpus/files/, and README.md.

    .venv/bin/python tests/corpus/make_corpus.py

Every file is made from seeded pixels with Pillow and then damaged by hand (the recipe is in
each case's `how`). The committed bytes are what tests/test_odd_files.py replays: a newer
Pillow, libjpeg or zlib may encode the starting images differently, so regenerating can change
the bytes; the expected outcome of each case must not change. Cases marked "fuzz" reproduce
inputs that tests/test_hostile.py found to crash or stall `decode_image` before it was
hardened (see the README for what each did).
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
FILES = HERE / "files"

#: Reasons (prefixes of FileResult.error) the replay checks for.
OVER_CAP = "image is "  # "image is N MP, above the limit of M MP; raise it with --max-megapixels"
UNKNOWN = "not a supported image (unknown or corrupt header)"
TRUNCATED = "truncated or corrupt image data ("
UNDECODABLE = "cannot decode image: "
SCANS = "JPEG has "
EMPTY = "empty file"


@dataclass(frozen=True)
class Case:
    """One corpus file: name, how it was made, what `load_file` must give ('ok' or a prefix)."""

    name: str
    expect: str
    how: str
    make: Callable[[], bytes]
    before: str = ""  # what went wrong before decode.py was hardened, if anything


# -- starting images ---------------------------------------------------------------------------


def photo(size: tuple[int, int] = (24, 20), seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    return image if mode == "RGB" else image.convert(mode)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


# -- format surgery ----------------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_size(width: int, height: int) -> bytes:
    """A real 24 x 20 PNG whose IHDR claims width x height (CRC fixed, so only size lies)."""
    data = bytearray(encode(photo(), "PNG"))
    data[8:33] = png_chunk(b"IHDR", struct.pack(">II", width, height) + bytes(data[24:29]))
    return bytes(data)


def png_one_bit_black(width: int, height: int) -> bytes:
    """A valid 1-bit all-black PNG, streamed: never holds the pixels (400 MP in ~50 KB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    parts = [packer.compress(row * 256) for _ in range(height // 256)]
    parts += [packer.compress(row * (height % 256)), packer.flush()]
    sig = b"\x89PNG\r\n\x1a\n"
    return (
        sig
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def png_chunk_length(value: int) -> bytes:
    """The IDAT chunk's length field overwritten with `value`."""
    data = bytearray(encode(photo(), "PNG"))
    at = data.index(b"IDAT") - 4
    data[at : at + 4] = struct.pack(">I", value)
    return bytes(data)


def png_ztxt_bomb() -> bytes:
    """A valid PNG with a zTXt chunk that inflates to 16 MB (Pillow's limit is 1 MB)."""
    data = encode(photo(), "PNG")
    text = b"Comment\x00\x00" + zlib.compress(b"A" * (16 << 20), 9)
    return data[:33] + png_chunk(b"zTXt", text) + data[33:]


def png_bad_crc() -> bytes:
    data = bytearray(encode(photo(), "PNG"))
    data[29] ^= 0xFF  # IHDR's CRC
    return bytes(data)


def jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(photo(), "JPEG", quality=80))
    at = data.index(b"\xff\xc0") + 5  # SOF0: length(2) precision(1) height(2) width(2)
    data[at : at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_scan_bomb(repeats: int = 2000) -> bytes:
    """A progressive 1024 x 1024 grey JPEG whose last scan is repeated `repeats` times."""
    data = encode(Image.new("L", (1024, 1024), 128), "JPEG", progressive=True, quality=50)
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + b"\xff\xd9"


def jpeg_exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return encode(photo(), "JPEG", exif=exif.tobytes())


def gif_descriptor(data: bytes) -> int:
    """Offset of the first image descriptor (',') after the palette and extension blocks."""
    at = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while data[at] == 0x21:  # extension: '!' label, then sub-blocks up to a 0 length
        at += 2
        while data[at]:
            at += data[at] + 1
        at += 1
    assert data[at] == 0x2C
    return at


def gif_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(photo(), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    at = gif_descriptor(data)  # ',' left top width height flags
    data[at + 5 : at + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def gif_garbage_lzw() -> bytes:
    """The first LZW data sub-block's bytes replaced by seeded random bytes."""
    data = bytearray(encode(photo(), "GIF"))
    at = gif_descriptor(data) + 10  # descriptor (10 bytes, no local palette), code size
    length = data[at + 1]
    data[at + 2 : at + 2 + length] = random_bytes(length, 3)
    return bytes(data)


def tiff_entries(data: bytes) -> dict[int, int]:
    """Tag -> byte offset of its 12-byte entry in the first IFD (little-endian TIFF)."""
    assert data[:2] == b"II"
    ifd = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, ifd)[0]
    return {
        struct.unpack_from("<H", data, ifd + 2 + 12 * i)[0]: ifd + 2 + 12 * i for i in range(count)
    }


def tiff_set(data: bytes, tag: int, *, count: int | None = None, value: int | None = None) -> bytes:
    out = bytearray(data)
    at = tiff_entries(data)[tag]
    if count is not None:
        struct.pack_into("<I", out, at + 4, count)
    if value is not None:
        kind = struct.unpack_from("<H", out, at + 2)[0]
        struct.pack_into("<H" if kind == 3 else "<I", out, at + 8, value)
    return bytes(out)


def tiff(image: Image.Image, **params: object) -> bytes:
    return encode(image, "TIFF", **params)


def tiff_with_size(width: int, height: int) -> bytes:
    data = tiff(photo())
    return tiff_set(tiff_set(data, 256, value=width), 257, value=height)


def tiff_described() -> bytes:
    return tiff(photo(), description="corpus " * 8)


def tiff_float_nan() -> bytes:
    values = np.linspace(0, 1, 24 * 20, dtype=np.float32).reshape(20, 24)
    values[0, :4] = [np.nan, np.inf, -np.inf, np.nan]
    return tiff(Image.fromarray(values, "F"))


def tiff_strip(mode: str, height: int) -> bytes:
    """An uncompressed 20 x 24 TIFF whose ImageLength says `height` rows (one strip)."""
    return tiff_set(tiff(photo((20, 24), mode=mode)), 257, value=height)


def webp_with_canvas(width: int, height: int) -> bytes:
    frames = [photo(), photo(seed=1)]
    data = bytearray(encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]))
    assert data[12:16] == b"VP8X"
    data[24:27] = (width - 1).to_bytes(3, "little")
    data[27:30] = (height - 1).to_bytes(3, "little")
    return bytes(data)


def webp_riff_size(value: int) -> bytes:
    data = bytearray(encode(photo(), "WEBP", quality=80))
    data[4:8] = struct.pack("<I", value)
    return bytes(data)


def random_bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


# -- the cases ---------------------------------------------------------------------------------

WARNED = "a Pillow UserWarning; under `-W error` it escaped decode_image as an exception"

CASES = [
    Case("empty.jpg", EMPTY, "zero bytes", lambda: b""),
    Case("random_bytes.jpg", UNKNOWN, "4 KB of seeded random bytes", lambda: random_bytes(4096, 1)),
    Case("text.png", UNKNOWN, "a line of text named .png", lambda: b"not an image, honest\n" * 9),
    Case("png_named.jpg", "ok", "a valid PNG named .jpg", lambda: encode(photo(), "PNG")),
    Case(
        "jpeg_truncated.jpg",
        TRUNCATED,
        "the first half of a baseline JPEG",
        lambda: half(encode(photo((64, 48)), "JPEG")),
    ),
    Case(
        "jpeg_sof_65500x65500.jpg",
        OVER_CAP,
        "SOF0 height/width overwritten with 65500 x 65500 (4.3 GP)",
        lambda: jpeg_with_size(65500, 65500),
    ),
    Case(
        "jpeg_sof_0x0.jpg",
        UNKNOWN,
        "SOF0 height/width overwritten with 0 x 0",
        lambda: jpeg_with_size(0, 0),
    ),
    Case(
        "jpeg_scan_bomb.jpg",
        SCANS,
        "progressive 1024 x 1024 grey JPEG, last scan repeated 2000 times",
        jpeg_scan_bomb,
        "libjpeg decoded every repeated scan (2.3 s; the cost grows with scans x pixels, "
        "so a 300 KB file at 100 MP runs for many minutes)",
    ),
    Case(
        "jpeg_exif_orientation_99.jpg",
        "ok",
        "EXIF Orientation tag = 99 (invalid)",
        lambda: jpeg_exif_orientation(99),
    ),
    Case(
        "png_ihdr_100000x100000.png",
        OVER_CAP,
        "IHDR claims 100000 x 100000 (CRC recomputed); IDAT is the real 24 x 20 data",
        lambda: png_with_size(100_000, 100_000),
    ),
    Case(
        "png_ihdr_0x20.png",
        UNKNOWN,
        "IHDR claims 0 x 20 (CRC recomputed)",
        lambda: png_with_size(0, 20),
    ),
    Case(
        "png_bomb_20000x20000.png",
        OVER_CAP,
        "a valid all-black 1-bit 20000 x 20000 PNG (400 MP, 50 MB of pixel rows, ~50 KB "
        "on disk), written by streaming zlib",
        lambda: png_one_bit_black(20_000, 20_000),
    ),
    Case(
        "png_idat_length_huge.png",
        "ok",
        "IDAT length field overwritten with 0x7FFFFFF0 (Pillow reads the data that is there)",
        lambda: png_chunk_length(0x7FFF_FFF0),
    ),
    Case("png_bad_ihdr_crc.png", UNKNOWN, "IHDR CRC bit-flipped", png_bad_crc),
    Case(
        "png_ztxt_bomb.png",
        UNDECODABLE,
        "a zTXt chunk that inflates to 16 MB (Pillow's MAX_TEXT_CHUNK is 1 MB)",
        png_ztxt_bomb,
    ),
    Case(
        "png_truncated.png",
        TRUNCATED,
        "the first half of a 64 x 48 PNG",
        lambda: half(encode(photo((64, 48)), "PNG")),
    ),
    Case(
        "gif_65535x65535.gif",
        OVER_CAP,
        "logical screen and image descriptor claim 65535 x 65535",
        lambda: gif_with_size(65535, 65535),
    ),
    Case(
        "gif_garbage_lzw.gif",
        UNDECODABLE,
        "the first LZW data sub-block replaced by seeded random bytes",
        gif_garbage_lzw,
    ),
    Case(
        "gif_truncated.gif",
        TRUNCATED,
        "the first half of a 64 x 48 GIF",
        lambda: half(encode(photo((64, 48)), "GIF")),
    ),
    Case(
        "tiff_100000x100000.tif",
        OVER_CAP,
        "ImageWidth/ImageLength overwritten with 100000 x 100000",
        lambda: tiff_with_size(100_000, 100_000),
    ),
    Case(
        "tiff_tag_beyond_eof.tif",
        UNKNOWN,
        "fuzz: ImageDescription's data offset pointed past the end of the file",
        lambda: tiff_set(tiff_described(), 270, value=0x7FFF_FFF0),
        "'Truncated File Read' " + WARNED,
    ),
    Case(
        "tiff_too_many_entries.tif",
        "ok",
        "fuzz: RowsPerStrip's count overwritten with 157",
        lambda: tiff_set(tiff(photo()), 278, count=157),
        "'Metadata Warning, tag 278 had too many entries' " + WARNED,
    ),
    Case(
        "tiff_float_nan.tif",
        "ok",
        "fuzz: a 32-bit float TIFF holding NaN, +inf and -inf pixels",
        tiff_float_nan,
        "numpy's RuntimeWarning 'invalid value encountered in cast' escaped under -W error; "
        "NaN pixels are now 0",
    ),
    Case(
        "tiff_cmyk_strip_20x2162692.tif",
        "ok",
        "fuzz: an uncompressed 20 x 24 CMYK TIFF whose ImageLength says 2162692 rows (43 MP)",
        lambda: tiff_strip("CMYK", 2_162_692),
        "the whole strip was resized to 168 x 18,167,612 px (a 9 GB intermediate) before "
        "the crop: 104 s at the test_resnet preprocess",
    ),
    Case(
        "tiff_float_strip_20x1000000.tif",
        "ok",
        "fuzz: an uncompressed 20 x 24 float TIFF whose ImageLength says 1000000 rows (20 MP)",
        lambda: tiff_strip("F", 1_000_000),
        "float64 temporaries plus the whole-strip resize (168 x 8,400,000 px, 4 GB): 32 s",
    ),
    Case(
        "tiff_truncated.tif",
        TRUNCATED,
        "the first half of an uncompressed 64 x 48 TIFF",
        lambda: half(tiff(photo((64, 48)))),
    ),
    Case(
        "webp_canvas_16384x16384.webp",
        OVER_CAP,
        "animated WebP whose VP8X canvas claims 16384 x 16384",
        lambda: webp_with_canvas(16384, 16384),
    ),
    Case(
        "webp_riff_size_huge.webp",
        UNDECODABLE,
        "RIFF size field overwritten with 0xFFFFFFF0",
        lambda: webp_riff_size(0xFFFF_FFF0),
    ),
    Case(
        "webp_truncated.webp",
        UNDECODABLE,
        "the first half of a lossy 64 x 48 WebP",
        lambda: half(encode(photo((64, 48)), "WEBP", quality=80)),
    ),
]


def write_readme() -> None:
    lines = [
        "# Regression corpus of bad image files",
        "",
        "Replayed on every test run by `tests/test_odd_files.py::test_corpus_file` (each file",
        "through `load_file`, with warnings turned into errors and a 5 s watchdog) and, all",
        "together, through `retrieval index` with test_resnet. Regenerate with",
        "`.venv/bin/python tests/corpus/make_corpus.py` (writes `files/` and this README from",
        "the `CASES` list; a newer Pillow/zlib may change the bytes, never the outcome). Add a",
        "case there for every input that ever crashed or stalled the decoder.",
        "",
        "`ok` means the file decodes (maybe partly); otherwise the failure reason starts with",
        "the text shown. Default cap: 100 MP.",
        "",
        "| file | bytes | how it was made | expected | before the fix |",
        "|---|---|---|---|---|",
    ]
    for case in CASES:
        size = (FILES / case.name).stat().st_size
        expect = "ok" if case.expect == "ok" else f"`{case.expect.strip()}...`"
        lines.append(f"| `{case.name}` | {size} | {case.how} | {expect} | {case.before or '-'} |")
    (HERE / "README.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    FILES.mkdir(exist_ok=True)
    for case in CASES:
        (FILES / case.name).write_bytes(case.make())
    write_readme()
    total = sum((FILES / c.name).stat().st_size for c in CASES)
    print(f"wrote {len(CASES)} files, {total} bytes, to {FILES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
