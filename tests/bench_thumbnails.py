"""Benchmark (not a unit test): thumbnails and previews made on demand, then from the cache.

    .venv/bin/python tests/bench_thumbnails.py --n 40 --side 3000 --work /tmp/bench-thumbs

Draws N photo-sized JPEGs (--side x 3/4 --side pixels, q90), indexes them with the tiny
untrained model (the figures are about pictures, not embeddings), then, in this process:
  1. `Index.thumbnail(id)` (256 px) for every id on an empty cache: decode + encode + write
  2. the same again: each a cache hit (a stat, a catalogue row, a file read)
  3. `Index.preview(id)` (1024 px), first and second time
  4. `Index.gallery` of a search with k=N (N thumbnails embedded), warm cache
  5. first views from --threads threads at once (as a server's clients): every id at two
     sizes not made before, per-call latency (decode + encode + cache write, concurrent)
Prints one JSON object: per-call medians and p90 in ms, and the miss/hit ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _photos(folder: str, n: int, side: int) -> list[str]:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(5)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)  # smooth when enlarged
        image = Image.fromarray(small).resize((side, side * 3 // 4), Image.Resampling.BICUBIC)
        path = os.path.join(folder, f"photo_{i:04d}.jpg")
        image.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def _timed(call, ids) -> list[float]:
    times = []
    for image_id in ids:
        start = time.perf_counter()
        call(image_id)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _stats(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
    }


def _concurrent_first_views(index, ids, threads: int) -> list[float]:
    """Per-call ms of first views of every id at sizes 64 and 96, from `threads` at once."""
    from concurrent.futures import ThreadPoolExecutor

    def one(task) -> float:
        start = time.perf_counter()
        index.thumbnail(task[0], size=task[1])
        return (time.perf_counter() - start) * 1000

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, [(i, s) for s in (64, 96) for i in ids]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--side", type=int, default=3000)
    parser.add_argument("--work", default="/tmp/bench-thumbnails")
    parser.add_argument("--threads", type=int, default=20)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    photos = _photos(os.path.join(args.work, "photos"), args.n, args.side)
    index_dir = os.path.join(args.work, "index")

    from conftest import TINY, run_cli

    result = run_cli("index", os.path.dirname(photos[0]), "--index", index_dir, *TINY)
    assert result.exit_code == 0, result.stderr
    from retrieval import Index

    index = Index(index_dir)
    ids = list(range(1, args.n + 1))
    cold = _timed(index.thumbnail, ids)
    warm = _timed(index.thumbnail, ids)
    preview_cold = _timed(index.preview, ids)
    preview_warm = _timed(index.preview, ids)
    (found,) = index.search(like=[photos[0]], k=args.n - 1)
    start = time.perf_counter()
    page = index.gallery([found])
    gallery_ms = (time.perf_counter() - start) * 1000
    concurrent = _concurrent_first_views(index, ids, args.threads)
    out = {
        "images": args.n,
        "pixels": f"{args.side}x{args.side * 3 // 4}",
        "thumbnail_first": _stats(cold),
        "thumbnail_cached": _stats(warm),
        "thumbnail_miss_over_hit": round(statistics.median(cold) / statistics.median(warm), 1),
        "preview_first": _stats(preview_cold),
        "preview_cached": _stats(preview_warm),
        "gallery_ms": round(gallery_ms, 1),
        f"thumbnail_first_{args.threads}_threads": _stats(concurrent),
        "gallery_bytes": len(page),
        "cache": Index(index_dir).check().to_dict().get("thumbnail_cache"),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
