"""Property-based fuzzing of the decoder: mutated JPEG, PNG, WebP, GIF and TIFF bytes.

Each example starts from a small valid image (several encodings per format) and applies 1-6
mutations: bit flips, truncations, byte insertions and deletions, overwrites, and overwrites
of a structural field (a PNG chunk length, a JPEG segment length or SOF size, a GIF screen or
descriptor size, a RIFF chunk size or VP8X canvas, a TIFF IFD entry's type/count/value) with
a boundary value. The bytes go through `load_file`, the function the indexer calls, with every
warning turned into an error and a watchdog: the only acceptable outcomes are pixels or a
failure reason (never an exception, never "unexpected decoder error", never > 5 s).

Inputs that ever failed here are kept in tests/corpus/ (replayed by test_odd_files.py).
The fast test runs `FAST_EXAMPLES` per format on every run; the slow-marked one runs
`SLOW_EXAMPLES` per format at the default 100 MP cap. Print the counts with `pytest -s`.
"""

from __future__ import annotations

import collections
import io
import os
import signal
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from retrieval.sources import decode
from retrieval.sources.decode import UNEXPECTED, hash_bytes, load_file
from retrieval.specs import Preprocess

#: A small model input: the fuzz is about parsing, not resampling.
PRE = Preprocess(32, 32, 36, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
#: Per-example limit (seconds); an example that takes longer is a hang.
LIMIT_S = 5.0
FAST_EXAMPLES = 400
SLOW_EXAMPLES = 1000
#: The fast run caps images at 10 MP so that headers which now claim a plausible size (say
#: 3000 x 3000) fail quickly; the slow run uses the product's default of 100 MP.
FAST_CAP_MP = 10.0
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF")


class Hang(BaseException):
    """Raised by the watchdog; a BaseException, so `load_file` cannot swallow it."""


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Fail with Hang if the block runs longer than `seconds` (SIGALRM: main thread only)."""

    def expire(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- seed images -------------------------------------------------------------------------------


def _photo(size: tuple[int, int] = (24, 20), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(0, 255, w * h * 3).reshape(h, w, 3)
    noise = rng.integers(0, 64, (h, w, 3))
    return Image.fromarray(((base + noise) % 256).astype(np.uint8), "RGB")


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _seeds() -> dict[str, dict[str, bytes]]:
    rgb, other = _photo(), _photo(seed=1)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    exif = Image.Exif()
    exif[0x0112] = 6
    grey16 = Image.fromarray((np.arange(24 * 20, dtype=np.uint16) * 137).reshape(20, 24))
    return {
        "JPEG": {
            "baseline": _encode(rgb, "JPEG", quality=80),
            "progressive": _encode(rgb, "JPEG", quality=80, progressive=True),
            "grey": _encode(rgb.convert("L"), "JPEG"),
            "cmyk": _encode(rgb.convert("CMYK"), "JPEG"),
            "exif-rotated": _encode(rgb, "JPEG", exif=exif.tobytes()),
            "444": _encode(rgb, "JPEG", subsampling=0, quality=95),
        },
        "PNG": {
            "rgb": _encode(rgb, "PNG"),
            "rgba": _encode(rgba, "PNG"),
            "palette": _encode(rgb.convert("P"), "PNG", transparency=0),
            "grey16": _encode(grey16, "PNG"),
            "one-bit": _encode(rgb.convert("1"), "PNG"),
            "apng": _encode(rgb, "PNG", save_all=True, append_images=[other]),
            "text": _encode(rgb, "PNG", pnginfo=_pnginfo()),
        },
        "WEBP": {
            "lossy": _encode(rgb, "WEBP", quality=80),
            "lossless": _encode(rgb, "WEBP", lossless=True),
            "alpha": _encode(rgba, "WEBP", quality=80),
            "animated": _encode(rgb, "WEBP", save_all=True, append_images=[other]),
        },
        "GIF": {
            "single": _encode(rgb, "GIF"),
            "animated": _encode(rgb, "GIF", save_all=True, append_images=[other], loop=0),
            "transparent": _encode(rgb.convert("P"), "GIF", transparency=3),
        },
        "TIFF": {
            "raw": _encode(rgb, "TIFF"),
            "lzw": _encode(rgb, "TIFF", compression="tiff_lzw"),
            "deflate": _encode(rgb, "TIFF", compression="tiff_adobe_deflate"),
            "packbits": _encode(rgb, "TIFF", compression="packbits"),
            "jpeg": _encode(rgb, "TIFF", compression="jpeg"),
            "grey16": _encode(grey16, "TIFF"),
            "float": _encode(
                Image.fromarray(np.linspace(0, 1, 480, dtype="f4").reshape(20, 24)), "TIFF"
            ),
            "cmyk": _encode(rgb.convert("CMYK"), "TIFF"),
            "two-pages": _encode(rgb, "TIFF", save_all=True, append_images=[other]),
        },
    }


def _pnginfo():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", "fuzz seed")
    info.add_text("Title", "compressed", zip=True)
    return info


# -- structural fields: (offset, width in bytes, byte order) ----------------------------------

Field = tuple[int, int, str]


def png_fields(data: bytes) -> list[Field]:
    fields: list[Field] = [(16, 4, ">"), (20, 4, ">"), (24, 1, ">"), (25, 1, ">")]
    at = 8
    while at + 8 <= len(data):
        fields.append((at, 4, ">"))  # chunk length
        at += 12 + struct.unpack_from(">I", data, at)[0]
    return fields


def jpeg_fields(data: bytes) -> list[Field]:
    fields: list[Field] = []
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        fields.append((at + 2, 2, ">"))  # segment length
        if marker in (0xC0, 0xC1, 0xC2):
            fields += [(at + 5, 2, ">"), (at + 7, 2, ">"), (at + 9, 1, ">")]  # h, w, components
        if marker == 0xDA:  # start of scan: entropy data follows; find the next marker
            fields += [(at + 4, 1, ">"), (at + 6, 1, ">")]
            nxt = at + 2 + struct.unpack_from(">H", data, at + 2)[0]
            while nxt + 1 < len(data) and not (
                data[nxt] == 0xFF and data[nxt + 1] not in (0x00, *range(0xD0, 0xD8))
            ):
                nxt += 1
            at = nxt
            continue
        at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return fields


def gif_fields(data: bytes) -> list[Field]:
    fields: list[Field] = [(6, 2, "<"), (8, 2, "<"), (10, 1, "<")]
    at = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while at < len(data) and data[at] in (0x21, 0x2C):
        if data[at] == 0x2C:  # image descriptor: x, y, w, h, flags; then LZW code size
            fields += [(at + 1, 2, "<"), (at + 5, 2, "<"), (at + 7, 2, "<"), (at + 9, 1, "<")]
            fields.append((at + 10, 1, "<"))
            at += 11
        else:
            at += 2
        while at < len(data) and data[at]:  # sub-blocks
            fields.append((at, 1, "<"))
            at += data[at] + 1
        at += 1
    return fields


def webp_fields(data: bytes) -> list[Field]:
    fields: list[Field] = [(4, 4, "<")]
    at = 12
    while at + 8 <= len(data):
        fields.append((at + 4, 4, "<"))  # chunk size
        kind = data[at : at + 4]
        if kind == b"VP8X":
            fields += [(at + 12, 3, "<"), (at + 15, 3, "<")]  # canvas width-1, height-1
        elif kind == b"VP8 ":
            fields += [(at + 14, 2, "<"), (at + 16, 2, "<")]  # frame width, height
        elif kind == b"VP8L":
            fields.append((at + 9, 4, "<"))  # packed 14-bit width-1, height-1
        elif kind == b"ANMF":
            fields += [(at + 14, 3, "<"), (at + 17, 3, "<")]  # frame width-1, height-1
            at += 24  # frames hold sub-chunks
            continue
        at += 8 + struct.unpack_from("<I", data, at + 4)[0] + (data[at + 4] & 1)
    return fields


def tiff_fields(data: bytes) -> list[Field]:
    order = "<" if data[:2] == b"II" else ">"
    fields: list[Field] = [(4, 4, order)]
    ifd = struct.unpack_from(order + "I", data, 4)[0]
    for _ in range(4):  # pages
        if not 0 < ifd < len(data) - 2:
            break
        count = struct.unpack_from(order + "H", data, ifd)[0]
        fields.append((ifd, 2, order))
        for i in range(count):
            entry = ifd + 2 + 12 * i
            fields += [(entry + 2, 2, order), (entry + 4, 4, order), (entry + 8, 4, order)]
        fields.append((ifd + 2 + 12 * count, 4, order))  # next IFD
        ifd = struct.unpack_from(order + "I", data, ifd + 2 + 12 * count)[0]
    return fields


FIELD_FINDERS: dict[str, Callable[[bytes], list[Field]]] = {
    "JPEG": jpeg_fields,
    "PNG": png_fields,
    "WEBP": webp_fields,
    "GIF": gif_fields,
    "TIFF": tiff_fields,
}
SEEDS = _seeds()
FIELDS = {
    fmt: {name: FIELD_FINDERS[fmt](data) for name, data in seeds.items()}
    for fmt, seeds in SEEDS.items()
}
BOUNDARY = [0, 1, 2, 3, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000]
BOUNDARY += [0xFF_FFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF]


# -- mutations ---------------------------------------------------------------------------------

POSITION = st.integers(0, 1 << 20)
MUTATION = st.one_of(
    st.tuples(st.just("flip"), POSITION, st.integers(0, 7)),
    st.tuples(st.just("truncate"), POSITION),
    st.tuples(st.just("insert"), POSITION, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), POSITION, st.integers(1, 64)),
    st.tuples(st.just("overwrite"), POSITION, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("field"), POSITION, st.sampled_from(BOUNDARY) | st.integers(0, 1 << 32)),
    st.tuples(st.just("field+-"), POSITION, st.integers(-2, 2)),
)
MUTATIONS = st.lists(MUTATION, min_size=1, max_size=6)


def mutate(data: bytes, fields: list[Field], mutations: list[tuple]) -> bytes:
    """Apply `mutations` in order; positions wrap around the current length."""
    out = bytearray(data)
    for kind, position, *args in mutations:
        if not out:
            break
        at = position % len(out)
        if kind == "flip":
            out[at] ^= 1 << args[0]
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = args[0]
        elif kind == "delete":
            del out[at : at + args[0]]
        elif kind == "overwrite":
            out[at : at + len(args[0])] = args[0]
        else:  # a structural field, set to a boundary value or nudged by -2..2
            offset, width, order = fields[position % len(fields)]
            if offset + width > len(out):
                continue
            current = int.from_bytes(out[offset : offset + width], _ORDER[order])
            value = args[0] if kind == "field" else current + args[0]
            value %= 1 << (8 * width)
            out[offset : offset + width] = value.to_bytes(width, _ORDER[order])
    return bytes(out)


_ORDER = {"<": "little", ">": "big"}


# -- the property ------------------------------------------------------------------------------


def check_file(path: Path, data: bytes, cap_mp: float, outcomes: collections.Counter) -> None:
    """`load_file` on `data` gives pixels or a reason, within LIMIT_S, whatever the bytes.

    Each example gets a new file (unlinked after): rewriting one file in place costs ~5 ms
    per example on ext4, which flushes a truncated-and-rewritten file on close.
    """
    path.write_bytes(data)
    started = time.monotonic()
    try:
        with warnings.catch_warnings(), watchdog(LIMIT_S):
            warnings.simplefilter("error")
            result = load_file(os.fsencode(path), PRE, cap_mp)
    finally:
        path.unlink()
    outcomes["seconds"] += time.monotonic() - started
    assert result.path == os.fsencode(path)
    if data:
        assert (result.size, result.content_hash) == (len(data), hash_bytes(data))
    if result.error is None:
        outcomes["decoded"] += 1
        assert result.pixels is not None
        assert result.pixels.shape == (PRE.height, PRE.width, 3)
        assert result.pixels.dtype == np.uint8
        assert result.width and result.height and result.width * result.height <= cap_mp * 1e6
        assert result.format in decode.FORMATS
    else:
        outcomes["failed"] += 1
        assert result.pixels is None
        assert isinstance(result.error, str) and result.error
        # A new exception type: add it to decode._BAD_INPUT and this input to the corpus.
        assert not result.error.startswith(UNEXPECTED), result.error


def run_fuzz(fmt: str, folder: Path, examples: int, cap_mp: float) -> collections.Counter:
    outcomes: collections.Counter = collections.Counter()
    names = sorted(SEEDS[fmt])

    @settings(
        max_examples=examples,
        deadline=None,  # the watchdog is the limit; the machine may be busy
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )
    @given(name=st.sampled_from(names), mutations=MUTATIONS)
    def one(name: str, mutations: list[tuple]) -> None:
        data = mutate(SEEDS[fmt][name], FIELDS[fmt][name], mutations)
        outcomes["examples"] += 1
        check_file(folder / f"{outcomes['examples']}.{fmt.lower()}", data, cap_mp, outcomes)

    started = time.monotonic()
    one()
    print(
        f"\nfuzz {fmt}: {outcomes['examples']} examples in {time.monotonic() - started:.1f} s "
        f"({outcomes['decoded']} decoded, {outcomes['failed']} failed with a reason; "
        f"{outcomes['seconds']:.1f} s in load_file)"
    )
    return outcomes


def test_every_seed_decodes(tmp_path: Path) -> None:
    """The starting points are valid, and each format has structural fields to corrupt."""
    for fmt, seeds in SEEDS.items():
        for name, data in seeds.items():
            outcomes: collections.Counter = collections.Counter()
            check_file(tmp_path / "seed", data, FAST_CAP_MP, outcomes)
            assert outcomes["decoded"] == 1, (fmt, name)
            assert len(FIELDS[fmt][name]) >= 3, (fmt, name)


def test_mutate_applies_each_kind() -> None:
    data = bytes(range(16))
    fields = [(4, 2, ">")]
    assert mutate(data, fields, [("flip", 17, 0)]) == data[:1] + b"\x00" + data[2:]
    assert mutate(data, fields, [("truncate", 5)]) == data[:5]
    assert mutate(data, fields, [("insert", 2, b"ab")]) == data[:2] + b"ab" + data[2:]
    assert mutate(data, fields, [("delete", 2, 3)]) == data[:2] + data[5:]
    assert mutate(data, fields, [("overwrite", 3, b"zz")]) == data[:3] + b"zz" + data[5:]
    assert mutate(data, fields, [("field", 9, 0xFFFF)]) == data[:4] + b"\xff\xff" + data[6:]
    assert mutate(data, fields, [("field+-", 0, -1)]) == data[:4] + b"\x04\x04" + data[6:]


@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzz(fmt: str, tmp_path: Path) -> None:
    outcomes = run_fuzz(fmt, tmp_path, FAST_EXAMPLES, FAST_CAP_MP)
    assert outcomes["examples"] >= FAST_EXAMPLES // 2  # Hypothesis may stop early on dupes


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_fuzz_more_at_the_default_cap(fmt: str, tmp_path: Path) -> None:
    outcomes = run_fuzz(fmt, tmp_path, SLOW_EXAMPLES, decode.defaults.MAX_MEGAPIXELS)
    assert outcomes["examples"] >= SLOW_EXAMPLES // 2
