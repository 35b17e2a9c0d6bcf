"""Benchmark (not a unit test): the clip-retrieval layout against the one-file parquet export.

    .venv/bin/python tests/bench_layout.py --n 200000 --dim 512 --work /tmp/bench-layout

Each step runs as its own `retrieval` process, timed, with its peak RSS (from wait4):

  1. write an export-format parquet of N clustered unit vectors and import it (preparation)
  2. `retrieval export --format parquet -o FILE`                      the one-file export
  3. `retrieval export --layout clip-retrieval -o DIR [--dtype float16]`  the shards
  4. `retrieval import DIR --index NEW`                               reading the shards back
  5. embedding-reader's parquet_npy over DIR (when installed), as clip-retrieval reads it

Prints one JSON object with seconds, peak RSS (GiB) and bytes on disk for every step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from bench_ann import run_isolated, write_parquet


def du(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--shard-size", type=int, default=100_000)
    parser.add_argument("--work", default="/tmp/bench-layout")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    work = args.work
    cli = [sys.executable, "-m", "retrieval"]
    source = os.path.join(work, "source.parquet")
    write_parquet(source, args.n, args.dim, 0.0)
    index = os.path.join(work, "index")
    out: dict[str, object] = {"n": args.n, "dim": args.dim, "shard_size": args.shard_size}
    steps = {
        "import_parquet": [*cli, "import", source, "--index", index],
        "export_parquet": [*cli, "export", "--index", index, "-o", f"{work}/all.parquet"],
    }
    for dtype in ("float32", "float16"):
        steps[f"export_layout_{dtype}"] = [
            *cli,
            "export",
            "--index",
            index,
            "--layout",
            "clip-retrieval",
            "--dtype",
            dtype,
            "--shard-size",
            str(args.shard_size),
            "-o",
            f"{work}/layout-{dtype}",
        ]
    steps["import_layout_float32"] = [
        *cli,
        "import",
        f"{work}/layout-float32",
        "--index",
        f"{work}/copy",
    ]
    for name, argv in steps.items():
        seconds, rss, _ = run_isolated(argv)
        out[name] = {"seconds": round(seconds, 2), "peak_rss_gib": round(rss, 3)}
    for name, path in (
        ("parquet_bytes", f"{work}/all.parquet"),
        ("layout_float32_bytes", f"{work}/layout-float32"),
        ("layout_float16_bytes", f"{work}/layout-float16"),
    ):
        out[name] = du(path)
    try:
        from embedding_reader import EmbeddingReader
    except ImportError:
        out["embedding_reader"] = "not installed"
    else:
        started = time.perf_counter()
        reader = EmbeddingReader(
            f"{work}/layout-float32/img_emb",
            file_format="parquet_npy",
            meta_columns=["image_path"],
            metadata_folder=f"{work}/layout-float32/metadata",
        )
        rows = sum(len(x) for x, _ in reader(batch_size=50_000, show_progress=False))
        out["embedding_reader"] = {"rows": rows, "seconds": round(time.perf_counter() - started, 2)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
