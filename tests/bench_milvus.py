"""Benchmark (not a unit test): the same synthetic export imported into vectors.faiss, into
a Milvus Lite collection (`--vectors milvus:`) and, with `--server`, into a Milvus 2.3 server
started on loopback from PyPI's `milvus` package (tests/_milvus_server.py), per index type:
import time, recall@10 against exact search at the index's default search parameters, the
first search (opening the index; for Milvus Lite, starting its in-process server on the file)
and the median time of one single-vector search and of a 100-query batch, each through
`Index.search_vectors` (which opens the index per call).

    .venv/bin/python tests/bench_milvus.py --n 20000 --dim 128 --work /tmp/bench-milvus --server

Milvus Lite is an in-process server; the Milvus server is a child process, stopped at the end.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_ann import export_table, mixture, synthetic_schema  # noqa: E402


def release_lite_servers() -> None:
    """Stop the Milvus Lite servers of this process (milvus-lite keeps them until exit)."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--types", default="flat,hnsw,ivf")
    ap.add_argument("--work", default="/tmp/bench-milvus")
    ap.add_argument("--server", action="store_true", help="also on a local Milvus server")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        backends = {"faiss": "faiss", "lite": "milvus:"}
        if args.server:
            import milvus
            from _milvus_server import running_server

            folder = args.work + "-server"
            shutil.rmtree(folder, ignore_errors=True)
            uri, _ = stack.enter_context(running_server(milvus, folder))
            backends["server"] = f"milvus:{uri}"
        run(args, backends)


def run(args: argparse.Namespace, backends: dict[str, str]) -> None:
    """Import, then search, each index type on each backend (label -> --vectors)."""
    import pyarrow.parquet as pq

    from retrieval import Index, StorageOptions

    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    xb = np.concatenate([x for _, x in mixture(args.n, args.dim, seed=1)])
    paths = [f"/bench/{i // 1000:04d}/img{i:07d}.jpg" for i in range(args.n)]
    file = os.path.join(args.work, "all.parquet")
    pq.write_table(export_table(synthetic_schema(args.dim), paths, xb, 1), file)
    xq = np.concatenate([x for _, x in mixture(100, args.dim, seed=7)])
    truth = np.argsort(-(xq @ xb.T), axis=1)[:, :10] + 1
    out: dict = {"n": args.n, "dim": args.dim, "runs": []}
    for kind in args.types.split(","):
        for label, backend in backends.items():
            index = Index(os.path.join(args.work, f"{kind}-{label}"))
            started = time.perf_counter()
            index.import_files([file], storage=StorageOptions(index_type=kind, vectors=backend))
            imported = time.perf_counter() - started
            release_lite_servers()  # searches start from a fresh process's state
            started = time.perf_counter()
            found = index.search_vectors(xq, k=10)
            first = time.perf_counter() - started
            pairs = zip(found, truth, strict=True)
            recall = np.mean([len({h.id for h in q.results} & set(t)) / 10 for q, t in pairs])
            one, batch = [], []
            for i in range(20):
                t = time.perf_counter()
                index.search_vectors(xq[i : i + 1], k=10)
                one.append(time.perf_counter() - t)
            for _ in range(5):
                t = time.perf_counter()
                index.search_vectors(xq, k=10)
                batch.append(time.perf_counter() - t)
            out["runs"].append(
                {
                    "type": kind,
                    "backend": label,
                    "import_s": round(imported, 2),
                    "first_search_s": round(first, 2),
                    "recall@10": round(float(recall), 4),
                    "search_1_ms": round(1000 * float(np.median(one)), 2),
                    "search_100_ms": round(1000 * float(np.median(batch)), 1),
                }
            )
            print(json.dumps(out["runs"][-1]), file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
