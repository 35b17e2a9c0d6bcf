"""Where a large image's decode time goes, per format and stage (not collected by pytest).

Makes PNG, WebP, TIFF, JPEG and grey PNG files of 5, 15 and 24 MP from data/photos (upscaled,
with mild sensor noise, as `retrieval.sources.synthetic` does) and times, per file, the
median CPU time (core-seconds; Pillow decodes on one thread) of:
read (`read_file`), hash (BLAKE2b-128 as stored, BLAKE3 and xxh3-128 for comparison),
open+load (JPEG: with draft), orient+to_rgb, and resize+crop three ways: the whole image
resized then cropped (`whole`, before), only the crop window resampled (`window`, now, see
`resize.CROP_FIRST_FROM`), and Pillow's box reduction first (`gap3`, reducing_gap=3.0: measured,
rejected, it moves lite0 embeddings to cosine 0.9994); then `decode_image` as before
(shortcuts=False: RGB first, whole image resized) and now, and their ratio. Also the hashes
alone on 1, 15 and 50 MB buffers.

    python tests/bench_decode.py                 # ~3 min on a loaded 2-core CPU
    python tests/bench_decode.py --repeat 5 --sizes 5120x2880 --formats PNG --noise 10
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.sources import decode, resize
from retrieval.specs import Preprocess

PHOTOS = Path(__file__).parents[1] / "data" / "photos"
#: resnet50's timm data config (the default model): 235 px shorter side, 224 crop, bicubic.
PREPROCESS = Preprocess(224, 224, 235, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: name: (Pillow format, extension, save options, mode); PNG-L: a grey scan or screenshot.
FORMATS = {
    "PNG": ("PNG", "png", {}, "RGB"),
    "WEBP": ("WEBP", "webp", {"quality": 90}, "RGB"),
    "TIFF": ("TIFF", "tif", {}, "RGB"),
    "JPEG": ("JPEG", "jpg", {"quality": 90}, "RGB"),
    "PNG-L": ("PNG", "png", {}, "L"),
}


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median CPU time of `fn` in ms: core-seconds, as `retrieval bench` counts a stage's
    cost, and unlike wall time barely moved by other processes on a loaded machine."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times) * 1000.0


def hashers() -> dict[str, Callable[[bytes], bytes]]:
    import blake3
    import xxhash

    return {
        "blake2b": lambda b: hashlib.blake2b(b, digest_size=16).digest(),
        "blake3": lambda b: blake3.blake3(b).digest(16),
        "xxh3_128": lambda b: xxhash.xxh3_128(b).digest(),
    }


def make_image(source: Path, size: tuple[int, int], seed: int, sigma: float) -> Image.Image:
    with Image.open(source) as image:
        base = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    rng = np.random.default_rng(seed)
    tile = rng.normal(0.0, sigma, (256, 256, 3)).astype(np.int16)
    reps = (-(-size[1] // 256), -(-size[0] // 256), 1)
    pixels = np.asarray(base, dtype=np.int16) + np.tile(tile, reps)[: size[1], : size[0]]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _gap3(rgb: Image.Image) -> Image.Image:
    """Shorter side to PREPROCESS.resize with Pillow's box reduction first (then cropped)."""
    w, h = rgb.size
    scale = PREPROCESS.resize / min(w, h)
    size = (max(PREPROCESS.resize, int(w * scale)), max(PREPROCESS.resize, int(h * scale)))
    return rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def stages(path: Path, repeat: int) -> dict[str, float]:
    data, _ = decode.read_file(os.fsencode(path))

    def load() -> Image.Image:
        image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":
            image.draft("RGB", (PREPROCESS.resize, PREPROCESS.resize))
        image.load()
        return image

    loaded = load()
    rgb = decode.to_rgb(decode._orient(loaded))
    row = {
        "MB": len(data) / 1e6,
        "read": median_ms(lambda: decode.read_file(os.fsencode(path)), repeat),
    }
    for name, fn in hashers().items():
        row[name] = median_ms(lambda fn=fn: fn(data), repeat)
    row["open+load"] = median_ms(load, repeat)
    row["to_rgb"] = median_ms(lambda: decode.to_rgb(decode._orient(loaded)), repeat)
    row["whole"] = median_ms(lambda: resize.resize_and_crop(rgb, PREPROCESS, False), repeat)
    row["window"] = median_ms(lambda: resize.resize_and_crop(rgb, PREPROCESS), repeat)
    row["gap3"] = median_ms(lambda: _gap3(rgb), repeat)
    for name, shortcuts in (("decode before", False), ("decode now", True)):
        row[name] = median_ms(
            lambda c=shortcuts: decode.decode_image(data, PREPROCESS, shortcuts=c), repeat
        )
    row["ratio"] = row["decode before"] / row["decode now"]
    return row


def hash_table(repeat: int) -> None:
    rng = np.random.default_rng(0)
    print("\n| buffer | " + " | ".join(f"{n} ms (GB/s)" for n in hashers()) + " |")
    print("|---|" + "---|" * len(hashers()))
    for mb in (1, 15, 50):
        buffer = rng.integers(0, 256, mb * 1_000_000, dtype=np.uint8).tobytes()
        cells = []
        for fn in hashers().values():
            ms = median_ms(lambda fn=fn, buffer=buffer: fn(buffer), repeat)
            cells.append(f"{ms:.2f} ({mb / ms:.2f})")
        print(f"| {mb} MB | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2560x1920,5120x2880,6000x4000")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--noise", type=float, default=4.0, help="sensor noise sigma, levels")
    args = parser.parse_args()
    sources = sorted(PHOTOS.iterdir())
    columns = ["MB", "read", "blake2b", "blake3", "xxh3_128", "open+load", "to_rgb"]
    columns += ["whole", "window", "gap3", "decode before", "decode now", "ratio"]
    print(f"noise sigma {args.noise}; medians of {args.repeat}, CPU ms")
    print("| format | size | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    with tempfile.TemporaryDirectory() as tmp:
        for n, size_text in enumerate(args.sizes.split(",")):
            size = tuple(int(v) for v in size_text.split("x"))
            image = make_image(sources[n % len(sources)], size, n, args.noise)  # type: ignore[arg-type]
            for fmt in args.formats.split(","):
                pillow_format, ext, params, mode = FORMATS[fmt]
                path = Path(tmp) / f"{size_text}.{ext}"
                image.convert(mode).save(path, pillow_format, **params)
                row = stages(path, args.repeat)
                cells = [f"{row[c]:.2f}" if c == "ratio" else f"{row[c]:.1f}" for c in columns]
                print(f"| {fmt} | {size_text} | " + " | ".join(cells) + " |", flush=True)
                path.unlink()
    hash_table(args.repeat)


if __name__ == "__main__":
    main()
