"""Whole-process `retrieval index` wall time, before and after run-time balancing, beside a
plain sequential loop, interleaved in one run (not collected by pytest).

    python tests/bench_balance.py make-png /tmp/png --count 150 --from data/photos
    python -m retrieval.sources.synthetic /tmp/jpg --count 100 --from data/photos
    git archive a09a431 | tar -x -C /tmp/before      # the code before
    git archive HEAD | tar -x -C /tmp/after          # and after, fixed while it runs
    python tests/bench_balance.py compare --before /tmp/before --after /tmp/after --rounds 3 \\
        --set png=/tmp/png --set jpg=/tmp/jpg --out /tmp/balance.jsonl

Each round runs every (set, precision, variant) once, in one order; the table gives medians.
Variants: `before` and `after` are `retrieval index --model resnet50 --no-pretrained` into a
fresh index with the code at --before and --after; `oversub` is the code after with
`--workers <cores>` (as many decoders as cores beside as many torch threads); `plain` is a
loop: PIL open (+ draft for JPEG), convert RGB, one bilinear resize to 224x224, the same model
and precision, batch 32, no database. Precision `auto` (bf16 where native) and fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLAIN = """
import os, sys, numpy as np
from PIL import Image
from retrieval.embedding.backbone import untrained
from retrieval.embedding.embedder import load_embedder
folder = sys.argv[1]
paths = sorted(os.path.join(folder, f) for f in os.listdir(folder))
embedder = load_embedder("resnet50", untrained(), "cpu", "auto")
batch = []
def flush():
    embedder.embed(np.stack(batch)); batch.clear()
for path in paths:
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (224, 224))
        batch.append(np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR)))
    if len(batch) == 32:
        flush()
if batch:
    flush()
"""


def make_png(folder: str, count: int, sources: list[str], seed: int = 0) -> None:
    """Decode-heavy PNG mix: `sources` upscaled to 2-15 MP (a third 2-15, the rest 2-6) with
    +-6 levels of noise, PNG compress level 1 (decoding cost barely depends on it)."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    bases = [Image.open(s).convert("RGB") for s in sources]
    for n in range(count):
        megapixels = rng.uniform(2, 15) if n % 3 == 0 else rng.uniform(2, 6)
        width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
        height = width * 3 // 4
        base = bases[n % len(bases)].resize((width, height), Image.BILINEAR)
        pixels = np.asarray(base).astype(np.int16)
        pixels += rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        image.save(os.path.join(folder, f"png_{n:04d}.png"), compress_level=1)


def _run(variant: str, folder: str, precision: str, before: str, after: str) -> tuple[float, dict]:
    env = {k: v for k, v in os.environ.items() if k != "RETRIEVAL_PRECISION"}
    if precision == "fp32":
        env["RETRIEVAL_PRECISION"] = "fp32"
    env["PYTHONPATH"] = before if variant == "before" else after
    scratch = tempfile.mkdtemp(prefix="bench-balance-")
    if variant == "plain":
        argv = [sys.executable, "-c", PLAIN, folder]
    else:
        argv = [sys.executable, "-m", "retrieval", "index", "--index", scratch + "/i"]
        argv += ["--model", "resnet50", "--no-pretrained", "--json", folder]
        if variant == "oversub":
            argv += ["--workers", str(len(os.sched_getaffinity(0)))]
    started = time.monotonic()
    # cwd: not this checkout, which `python -m` would put first on the path
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, cwd=scratch)
    seconds = time.monotonic() - started
    shutil.rmtree(scratch)
    report = json.loads(done.stdout) if variant != "plain" else {}
    return seconds, {k: report[k] for k in ("added", "workers", "threads") if k in report}


def compare(args: argparse.Namespace) -> None:
    sets = dict(s.split("=", 1) for s in args.set)
    rows: dict[tuple[str, str, str], list[float]] = {}
    for round_ in range(args.rounds):
        for name, folder in sets.items():
            for precision in args.precisions.split(","):
                for variant in args.variants.split(","):
                    if variant == "oversub" and args.oversub not in ("all", name):
                        continue  # one decode-bound case: time is short on a shared machine
                    seconds, extra = _run(variant, folder, precision, args.before, args.after)
                    rows.setdefault((name, precision, variant), []).append(seconds)
                    line = {"round": round_, "set": name, "precision": precision}
                    line |= {"variant": variant, "seconds": round(seconds, 2), **extra}
                    with open(args.out, "a") as fh:
                        fh.write(json.dumps(line) + "\n")
                    print(json.dumps(line), flush=True)
    table(rows)


def table(rows: dict[tuple[str, str, str], list[float]]) -> None:
    print("| set | precision | variant | median s | runs | x plain | x before |")
    print("|---|---|---|---|---|---|---|")
    for (name, precision, variant), times in sorted(rows.items()):
        median = statistics.median(times)
        plain = statistics.median(rows.get((name, precision, "plain"), [float("nan")]))
        before = statistics.median(rows.get((name, precision, "before"), [float("nan")]))
        print(
            f"| {name} | {precision} | {variant} | {median:.1f} | {len(times)} | "
            f"{plain / median:.2f} | {before / median:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    png = sub.add_parser("make-png")
    png.add_argument("folder")
    png.add_argument("--count", type=int, default=150)
    png.add_argument("--from", dest="sources", required=True)
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("--before", required=True, help="a checkout of the code before")
    cmp_.add_argument("--after", default=ROOT, help="the code after [default: this one]")
    cmp_.add_argument("--set", action="append", required=True, help="NAME=FOLDER")
    cmp_.add_argument("--rounds", type=int, default=3)
    cmp_.add_argument("--variants", default="before,after,oversub,plain")
    cmp_.add_argument("--precisions", default="auto,fp32")
    cmp_.add_argument("--oversub", default="png", help="the set to time oversub on, or all")
    cmp_.add_argument("--out", default="bench_balance.jsonl")
    summary = sub.add_parser("table", help="the table of a --out file")
    summary.add_argument("jsonl")
    args = parser.parse_args()
    if args.command == "make-png":
        files = sorted(os.listdir(args.sources))
        make_png(args.folder, args.count, [os.path.join(args.sources, f) for f in files])
    elif args.command == "compare":
        compare(args)
    else:
        rows: dict[tuple[str, str, str], list[float]] = {}
        with open(args.jsonl) as fh:
            for line in map(json.loads, fh):
                key = (line["set"], line["precision"], line["variant"])
                rows.setdefault(key, []).append(line["seconds"])
        table(rows)


if __name__ == "__main__":
    main()
