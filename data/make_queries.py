"""Make the demo query images: edited copies of some of the photos.

Reads originals from data/photos/ and writes data/queries/<original>_<edit>.jpg.
Each query is a single edit a user might plausibly make to a photo, so the
retrieval demo should rank its original first. Deterministic; needs Pillow only.

    python data/make_queries.py
"""
import math
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

HERE = Path(__file__).resolve().parent
PHOTOS, QUERIES = HERE / "photos", HERE / "queries"


def crop(im):  # centred crop keeping ~70% of the area
    s = math.sqrt(0.70)
    w, h = im.size
    cw, ch = round(w * s), round(h * s)
    left, top = (w - cw) // 2, (h - ch) // 2
    return im.crop((left, top, left + cw, top + ch))


def brighter(im):  # +20% brightness, +30% contrast
    return ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.2)).enhance(1.3)


def small(im):  # downscale to 1/3 per side
    return im.resize((im.width // 3, im.height // 3), Image.LANCZOS)


def rotate(im, deg=6.0):  # straighten-style rotation, cropped to hide the corners
    w, h = im.size
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    k = min(w / (w * c + h * s), h / (w * s + h * c))  # largest same-aspect inner box
    im = im.rotate(deg, resample=Image.BICUBIC)
    cw, ch = int(w * k), int(h * k)
    left, top = (w - cw) // 2, (h - ch) // 2
    return im.crop((left, top, left + cw, top + ch))


# (original in photos/, query name, edit, JPEG quality)
EDITS = [
    ("coffee.jpg", "coffee_crop.jpg", crop, 90),
    ("chelsea.jpg", "chelsea_flip.jpg", ImageOps.mirror, 90),
    ("astronaut.png", "astronaut_bright.jpg", brighter, 90),
    ("retina.jpg", "retina_small.jpg", small, 60),
    ("rocket.webp", "rocket_rotate.jpg", rotate, 90),
]

if __name__ == "__main__":
    QUERIES.mkdir(exist_ok=True)
    for src, dst, edit, quality in EDITS:
        with Image.open(PHOTOS / src) as im:
            out = edit(im.convert("RGB"))
        out.save(QUERIES / dst, quality=quality)
        print(f"{src} -> {dst} {out.size} q{quality}")
