"""What decoding costs beyond pixels: one read per file for hash and decode, only
model-sized arrays between processes, and the content hash old catalogues were written with.
(Speed itself is measured by tests/bench_decode.py, never timed here.)
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.ops.workers import decode_files
from retrieval.sources.decode import hash_bytes, load_file
from retrieval.specs import Preprocess

RESNET50 = Preprocess(224, 224, 235, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _noisy_png(path: Path, size: tuple[int, int]) -> bytes:
    """A PNG that does not compress (noise): its file size is about its pixel bytes."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).save(path, "PNG")
    return os.fsencode(path)


def test_the_content_hash_is_blake2b_128_as_old_catalogues_store_it() -> None:
    """Move and touch detection compare this with hashes written by earlier versions (and
    exports carry it as hex): changing it needs a recorded algorithm, not an edit here."""
    assert hash_bytes(b"abc").hex() == "cf4ab791c62b8d2b2109c90275287816"
    data = os.urandom(1 << 20)
    assert hash_bytes(data) == hashlib.blake2b(data, digest_size=16).digest()


def _bytes_read() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/io")
def test_a_file_is_read_once_for_hash_and_decode(tmp_path: Path) -> None:
    path = _noisy_png(tmp_path / "big.png", (2000, 1500))
    size = os.path.getsize(path)
    load_file(path, RESNET50, 100.0)  # warm imports and plugins
    before = _bytes_read()
    result = load_file(path, RESNET50, 100.0)
    read = _bytes_read() - before
    assert result.error is None and result.content_hash == hash_bytes(
        Path(path.decode()).read_bytes()
    )
    assert size <= read < 1.1 * size, (size, read)


def test_workers_ship_model_sized_pixels_only(tmp_path: Path) -> None:
    """What a decode worker pickles back for a 6 MP image is its 224 x 224 x 3 input."""
    paths = [_noisy_png(tmp_path / f"{n}.png", (3000, 2000)) for n in range(2)]
    results = decode_files(paths, RESNET50, 100.0)
    assert [r.pixels.shape for r in results] == [(224, 224, 3)] * 2
    assert all(r.pixels.dtype == np.uint8 for r in results)
    shipped = len(pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL))
    assert shipped < 2 * 224 * 224 * 3 + 4096, shipped  # not 2 x 18 MB of full-size pixels
