"""The megapixel cap is per call: threads decoding with different caps do not race.

Pillow's decompression-bomb guard is one process-wide number (`Image.MAX_IMAGE_PIXELS`); a
server decodes uploads (its --max-megapixels) and thumbnails at once, so a call must never
lower the guard under another call's cap."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image

from retrieval.errors import BadImage
from retrieval.sources.decode import decode_picture


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 128).save(out, "PNG")
    return out.getvalue()


def test_threads_with_different_caps_each_get_their_own_cap() -> None:
    big = _png(1500, 1000)  # 1.5 MP: allowed under a 2 MP cap
    small = _png(40, 30)
    errors: list[str] = []
    stop = time.monotonic() + 3.0

    def decode_big() -> None:
        while time.monotonic() < stop and not errors:
            try:
                decode_picture(big, 32, max_megapixels=2.0)
            except BadImage as exc:
                errors.append(str(exc))

    def decode_small() -> None:  # a low cap (0.5 MP, under half the big image)
        while time.monotonic() < stop and not errors:
            decode_picture(small, 32, max_megapixels=0.5)

    threads = [threading.Thread(target=decode_big)] + [
        threading.Thread(target=decode_small) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []


def test_a_low_cap_is_still_enforced_after_a_high_one() -> None:
    decode_picture(_png(1500, 1000), 32, max_megapixels=5.0)
    with pytest.raises(BadImage, match=r"1\.5 MP, above the limit of 1 MP"):
        decode_picture(_png(1500, 1000), 32, max_megapixels=1.0)
    with pytest.raises(BadImage, match="above the limit of 0.001 MP"):
        decode_picture(_png(40, 30), 32, max_megapixels=0.001)


def test_a_gif_frame_growing_the_canvas_past_the_cap_is_refused() -> None:
    """Pillow grows a GIF's size to a frame's extent; the cap applies to the grown size."""
    decode_picture(_png(10, 10), 8, max_megapixels=50.0)  # the guard is high now
    out = io.BytesIO()
    Image.new("P", (10, 10)).save(out, "GIF")
    gif = bytearray(out.getvalue())
    at = gif.index(b",")  # image descriptor: x, y, w, h (little-endian)
    gif[at + 5 : at + 9] = (2000).to_bytes(2, "little") + (1000).to_bytes(2, "little")
    with pytest.raises(BadImage):
        decode_picture(bytes(gif), 8, max_megapixels=1.0)
