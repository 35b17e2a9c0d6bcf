"""Images for `retrieval bench`, made on the fly (nothing here is committed data).

Decoding cost depends on pixel count and entropy, so photos are sources (or a drawn
pattern) upscaled to camera sizes with sensor-like noise added. Mixes:

* `photos`: quality-90 JPEGs of 2-24 MP (a 24 MP one is about 9 MB, as a camera's would be)
  with one small PNG in four: the JPEG mix.
* `png`: the decode-heavy mix of issue 12: wallpaper PNGs up to 5120x2880 (photo-like, with
  fine noise: 1.2-1.7 bytes per pixel, as rendered wallpapers are) and small RGBA clip-art
  PNGs (flat shapes on transparency), 2.3 MP mean. PNG cannot be draft-decoded, so every
  pixel is inflated and resampled.
* `small`: small images only (fast to make), for tests and memory-versus-folder-size runs.

Make a folder once and reuse it (reproducible: same arguments, same bytes):

    python -m retrieval.sources.synthetic /tmp/bench-photos --count 48 --from data/photos
    python -m retrieval.sources.synthetic /tmp/bench-png --count 48 --mix png
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

#: (width, height, format) cycled through: 2-24 MP JPEGs (megapixels 24, 2, 12, 8, 16, 2)
#: with one small PNG (screenshot, scan, icon) in four.
PHOTO_MIX = (
    (6000, 4000, "JPEG"),
    (1632, 1224, "JPEG"),
    (640, 480, "PNG"),
    (4000, 3000, "JPEG"),
    (3264, 2448, "JPEG"),
    (800, 600, "PNG"),
    (4608, 3456, "JPEG"),
    (1920, 1080, "JPEG"),
)
#: Small images only (fast to make): for tests and for memory-versus-folder-size runs.
SMALL_MIX = ((320, 240, "JPEG"), (240, 320, "PNG"), (400, 300, "JPEG"), (256, 256, "PNG"))
#: Wallpapers (1920x1080 to 5120x2880) one in three, small clip art the rest: 2.33 MP mean.
PNG_MIX = (
    (1920, 1080, "PNG"),
    (512, 512, "PNG"),
    (256, 256, "PNG"),
    (5120, 2880, "PNG"),
    (640, 480, "PNG"),
    (400, 400, "PNG"),
    (2560, 1440, "PNG"),
    (800, 600, "PNG"),
    (320, 320, "PNG"),
    (3200, 1800, "PNG"),
    (600, 450, "PNG"),
    (128, 128, "PNG"),
)
MIXES = {"photos": PHOTO_MIX, "png": PNG_MIX, "small": SMALL_MIX}
#: In the png mix, images of at least this many pixels are wallpapers, smaller ones clip art.
_WALLPAPER_PIXELS = 1_000_000

_NOISE_TILE = 256


def make_images(
    folder: str | os.PathLike[str],
    count: int,
    mix: str = "photos",
    sources: Sequence[str | os.PathLike[str]] = (),
    seed: int = 0,
) -> list[str]:
    """Write `count` images into `folder` (created); returns their paths in order.

    `sources` are images to upscale (cycled); without them a seeded pattern is drawn.
    """
    sizes = MIXES[mix]
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    bases = [_load_rgb(s) for s in sources] or [_pattern(rng, seed + i) for i in range(4)]
    paths = []
    for n in range(count):
        width, height, fmt = sizes[n % len(sizes)]
        if mix == "png" and width * height < _WALLPAPER_PIXELS:
            image = _clip_art((width, height), rng)
        else:
            sigma = 10.0 if fmt == "JPEG" else 4.0 if mix == "png" else 0.0
            image = _photo(bases[n % len(bases)], (width, height), rng, sigma)
        ext = "jpg" if fmt == "JPEG" else "png"
        path = os.path.join(os.fspath(folder), f"bench_{n:05d}_{width}x{height}.{ext}")
        params = {"quality": 90} if fmt == "JPEG" else {"compress_level": 1}
        image.save(path, fmt, **params)
        paths.append(path)
    return paths


def _load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _pattern(rng: np.random.Generator, seed: int) -> Image.Image:
    """A 96x64 picture of coloured blobs: smooth when upscaled, like a defocused scene."""
    small = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize((96, 64), Image.Resampling.BICUBIC)


def _clip_art(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """RGBA: a few flat-coloured shapes with outlines on a transparent background."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    w, h = size
    for _ in range(int(rng.integers(3, 8))):
        x0, x1 = sorted(int(v) for v in rng.integers(0, w, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, h, 2))
        fill = (*(int(v) for v in rng.integers(0, 256, 3)), 255)
        shape = draw.ellipse if rng.integers(2) else draw.rectangle
        shape((x0, y0, x1 + 1, y1 + 1), fill=fill, outline=(0, 0, 0, 255), width=max(1, w // 100))
    return image


def _photo(
    base: Image.Image, size: tuple[int, int], rng: np.random.Generator, sigma: float
) -> Image.Image:
    image = base.resize(size, Image.Resampling.BILINEAR)
    if not sigma:
        return image
    # Sensor noise gives the file a camera's entropy; one tile repeated is as costly to
    # decode as fresh noise (JPEG: no match across blocks; PNG: tiles are far apart beyond
    # zlib's 32 KB window) and much faster to make.
    tile = rng.normal(0.0, sigma, (_NOISE_TILE, _NOISE_TILE, 3)).astype(np.int16)
    reps = (-(-size[1] // _NOISE_TILE), -(-size[0] // _NOISE_TILE), 1)
    noise = np.tile(tile, reps)[: size[1], : size[0]]
    pixels = np.asarray(image, dtype=np.int16) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--mix", choices=sorted(MIXES), default="photos")
    parser.add_argument("--from", dest="source", help="a folder of images to upscale")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sources = []
    if args.source:
        sources = sorted(
            os.path.join(args.source, name)
            for name in os.listdir(args.source)
            if name.lower().endswith((".jpg", ".jpeg", ".png", ".webp"))
        )
    paths = make_images(args.folder, args.count, args.mix, sources, args.seed)
    total = sum(os.path.getsize(p) for p in paths)
    print(f"wrote {len(paths)} images ({total / 1e6:.0f} MB) to {args.folder}")


if __name__ == "__main__":
    main()
