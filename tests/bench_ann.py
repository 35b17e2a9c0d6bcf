"""Benchmark (not a unit test): N clustered vectors through import, recall and batched search.

    .venv/bin/python tests/bench_ann.py --n 1000000 --dim 512 --work /tmp/bench-ann
    .venv/bin/python tests/bench_ann.py --n 1000000 --dim 2048 --spectrum 1 \
        --vector-dtype float16 --reduce 256 --work /tmp/bench-2048

Each step runs as its own `retrieval` process, timed, with its peak RSS (from wait4):

  1. write an export-format parquet of N clustered unit vectors (preparation, not timed)
  2. `retrieval import FILE --index DIR --json`           auto picks and builds the type
  3. `retrieval optimize --measure --json`                recall@10 vs exact as imported
  4. `retrieval optimize --json`                          tune nprobe/efSearch to 0.95
  5. a search process: open + first query (load), then Q fresh queries in one batch

The data: 2,000 Gaussian clusters around random centres with uneven sizes (Dirichlet 0.5)
and per-cluster spreads of 0.3-0.9 (cosine to the centre 0.74-0.96), L2-normalised. Queries
for step 5 are new draws from the same mixture. With `--spectrum A`, the centres and the
noise have a decaying variance spectrum, coordinate i scaled by (i+1)**(-A/2) (variance
proportional to 1/(i+1)**A), like CNN features whose variance is concentrated in few
directions; a PCA reduction then has something to keep. Prints one JSON object with every
number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

CLUSTERS = 2000


def mixture(n: int, d: int, seed: int, chunk: int = 50_000, spectrum: float = 0.0):
    """Yield (start, xb) chunks of n unit vectors from the fixed mixture (centres seed 1234)."""
    rng = np.random.default_rng(1234)
    scale = (np.arange(1, d + 1, dtype=np.float32) ** (-spectrum / 2)).astype(np.float32)
    centres = rng.standard_normal((CLUSTERS, d)).astype(np.float32) * scale
    spread = rng.uniform(0.3, 0.9, CLUSTERS).astype(np.float32)
    weights = rng.dirichlet(np.full(CLUSTERS, 0.5))
    draw = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        labels = draw.choice(CLUSTERS, size, p=weights)
        noise = draw.standard_normal((size, d), np.float32)
        if spectrum:
            noise *= scale
        x = centres[labels] + spread[labels, None] * noise
        yield start, x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic_schema(d: int):
    """The parquet schema of an export of `d`-d vectors from a made-up untrained model."""
    from retrieval.ops.exchange import parquet_schema
    from retrieval.specs import ModelInfo, Preprocess, WeightsSpec
    from retrieval.store.manifest import Manifest

    model = ModelInfo(
        "synthetic-mixture",
        WeightsSpec("untrained", identity="1234"),
        Preprocess(224, 224, 256, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        d,
    )
    return parquet_schema(Manifest(model=model, precision="fp32"))


def export_table(schema, paths: list[str], xb: np.ndarray, first: int):
    """Rows `first`.. of an export: `paths`, vectors `xb` (n, d) float32, plausible stats."""
    import pyarrow as pa

    ids = np.arange(first, first + len(xb))
    return pa.table(
        {
            "id": ids,
            "path": paths,
            "path_bytes": [p.encode() for p in paths],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(xb.ravel()), xb.shape[1]),
            "size": np.full(len(xb), 100_000),
            "mtime_ns": 1_600_000_000_000_000_000 + ids,
            "width": np.full(len(xb), 640, np.int32),
            "height": np.full(len(xb), 480, np.int32),
            "format": ["JPEG"] * len(xb),
            "content_hash": [None] * len(xb),
        },
        schema=schema,
    )


def write_parquet(path: str, n: int, d: int, spectrum: float) -> None:
    import pyarrow.parquet as pq

    schema = synthetic_schema(d)
    with pq.ParquetWriter(path, schema) as writer:
        for start, xb in mixture(n, d, seed=1, spectrum=spectrum):
            paths = [
                f"/bench/{i // 1000:04d}/img{i:07d}.jpg" for i in range(start, start + len(xb))
            ]
            writer.write_table(export_table(schema, paths, xb, start))


def run_isolated(args: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS in GiB, stdout) of one child process, its rusage from wait4."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(args, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed ({child.returncode}):\n{err.read()}")
        return seconds, usage.ru_maxrss / 2**20, out.read()


def search_child(directory: str, n_queries: int, d: int, k: int, spectrum: float) -> None:
    """Step 5, in its own process: load time, then one batch of fresh queries."""
    from retrieval.api import Index

    (_, xq), *_ = list(mixture(n_queries, d, seed=99, chunk=n_queries, spectrum=spectrum))
    index = Index(directory)
    started = time.perf_counter()
    index.search_vectors(xq[:1], k=k)
    load = time.perf_counter() - started
    started = time.perf_counter()
    index.search_vectors(xq, k=k)  # opens the index again: the load is in this time too
    with_reload = time.perf_counter() - started
    from retrieval.store.index_dir import IndexDir

    with IndexDir.open(directory) as index_dir:
        index_dir.base()
        started = time.perf_counter()
        found = index_dir.search(xq, k)
        batch = time.perf_counter() - started
    assert all(len(hits) == k for hits in found)
    print(
        json.dumps(
            {
                "load_and_first_query_s": round(load, 3),
                "open_and_batch_s": round(with_reload, 3),
                "queries": n_queries,
                "batch_s_after_load": round(batch, 4),
                "ms_per_query_after_load": round(1e3 * batch / n_queries, 4),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--work", default="/tmp/bench-ann")
    parser.add_argument("--memory", default=None, help="--memory for the import (auto)")
    parser.add_argument("--vector-dtype", default="float32")
    parser.add_argument("--reduce", type=int, default=None, help="--dim for the import (PCA)")
    parser.add_argument("--whiten", action="store_true", help="whitened PCA (with --reduce)")
    parser.add_argument("--spectrum", type=float, default=0.0, help="variance decay exponent")
    parser.add_argument("--search-child", nargs=4, metavar=("DIR", "Q", "D", "K"))
    args = parser.parse_args()
    if args.search_child:
        directory, q, d, k = args.search_child
        search_child(directory, int(q), int(d), int(k), args.spectrum)
        return
    retrieval = os.path.join(os.path.dirname(sys.executable), "retrieval")
    os.makedirs(args.work, exist_ok=True)
    data = os.path.join(args.work, f"mixture-{args.n}x{args.dim}-s{args.spectrum:g}.parquet")
    directory = os.path.join(args.work, "index")
    shutil.rmtree(directory, ignore_errors=True)
    out: dict = {
        "n": args.n,
        "dim": args.dim,
        "spectrum": args.spectrum,
        "vector_dtype": args.vector_dtype,
        "memory": args.memory,
        "reduce": args.reduce,
        "whiten": args.whiten if args.reduce else None,
        "cpus": os.cpu_count(),
    }
    if not os.path.exists(data):
        started = time.perf_counter()
        write_parquet(data + ".tmp", args.n, args.dim, args.spectrum)
        os.replace(data + ".tmp", data)
        out["prepare_parquet_s"] = round(time.perf_counter() - started, 1)
    extra = ["--memory", args.memory] if args.memory else []
    if args.reduce:
        extra += ["--dim", str(args.reduce)] + (["--whiten"] if args.whiten else [])
    seconds, rss, text = run_isolated(
        [retrieval, "import", data, "--index", directory, "--json", "--vector-dtype"]
        + [args.vector_dtype, *extra]
    )
    out["import"] = {"seconds": round(seconds, 1), "peak_rss_gib": round(rss, 2)}
    out["import"]["report"] = json.loads(text)
    q = str(args.queries)
    for step, flags in (("as_imported", ["--measure"]), ("optimized", [])):
        seconds, rss, text = run_isolated(
            [retrieval, "optimize", "--index", directory, "--json", "--queries", q, *flags]
        )
        report = json.loads(text)
        out[step] = {
            "seconds": round(seconds, 1),
            "peak_rss_gib": round(rss, 2),
            "index": report["after"],
            "tuned": report["tuned"],
            "recall": report["recall"],
        }
    seconds, rss, text = run_isolated(
        [sys.executable, __file__, "--search-child", directory, q, str(args.dim), "10"]
        + ["--spectrum", str(args.spectrum)]
    )
    out["search"] = {
        **json.loads(text),
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(rss, 2),
    }
    out["disk_bytes"] = {
        name: os.path.getsize(os.path.join(directory, name))
        for name in sorted(os.listdir(directory))
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
