"""Benchmark (not a unit test): `retrieval dups` over N clustered vectors with planted groups.

    .venv/bin/python tests/bench_dups.py --n 1000000 --dim 512 --work /tmp/bench-dups

Steps, each a `retrieval` process timed with its peak RSS (from wait4):
  1. write an export-format parquet (preparation, not timed): N vectors from bench_ann's
     mixture, plus planted groups: N/100 sources drawn at random, each given 1-3 copies
     whose cosine to the source is uniform in [--copy-low, 0.995] (small noise)
  2. `retrieval import FILE --index DIR --json`      (auto picks the type; --index-type)
  3. `retrieval dups --threshold T --json -o OUT`    the figure this benchmark is for
  4. scoring (not timed): a planted group is recovered when some found group holds exactly
     its members; a false merge is a found group holding members of two planted groups or
     a planted member with an unplanted image; extra groups are found groups with no planted
     member (natural near-duplicates of the mixture at T), counted, not judged.
Also measured on a sample of 50,000 mixture vectors: the highest cosine between unrelated
vectors (the nearest neighbour of each), to show the gap between T and the data.
Prints one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ann import (  # noqa: E402 - the same data, rows and process timing
    export_table,
    mixture,
    run_isolated,
    synthetic_schema,
)


def copies_of(x: np.ndarray, count: int, low: float, rng: np.random.Generator) -> np.ndarray:
    """`count` unit vectors whose cosine with unit `x` (d,) is uniform in [low, 0.995]."""
    cosines = rng.uniform(low, 0.995, count)
    r = rng.standard_normal((count, len(x)))
    r -= (r @ x)[:, None] * x[None, :]
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    out = cosines[:, None] * x[None, :] + np.sqrt(1 - cosines**2)[:, None] * r
    return out.astype(np.float32)


def write_parquet(path: str, n: int, d: int, low: float) -> dict[str, list[str]]:
    """The export file; returns {group name: member paths} of the planted groups."""
    import pyarrow.parquet as pq

    schema = synthetic_schema(d)
    rng = np.random.default_rng(77)
    sources = set(rng.choice(n, n // 100, replace=False).tolist())
    planted: dict[str, list[str]] = {}

    with pq.ParquetWriter(path, schema) as writer:
        for start, xb in mixture(n, d, seed=1):
            paths = [
                f"/bench/{i // 1000:04d}/img{i:07d}.jpg" for i in range(start, start + len(xb))
            ]
            writer.write_table(export_table(schema, paths, xb, start))
            extra_paths, extra = [], []
            for row in range(len(xb)):
                if start + row not in sources:
                    continue
                copies = copies_of(xb[row].astype(np.float64), int(rng.integers(1, 4)), low, rng)
                names = [f"/bench/dups/g{start + row:07d}_{j}.jpg" for j in range(len(copies))]
                planted[f"g{start + row}"] = [paths[row], *names]
                extra_paths += names
                extra.append(copies)
            if extra:
                writer.write_table(
                    export_table(schema, extra_paths, np.concatenate(extra), n + len(planted))
                )
    return planted


def score(found: list[list[str]], planted: dict[str, list[str]]) -> dict[str, int | float]:
    owner = {p: name for name, members in planted.items() for p in members}
    exact = {frozenset(m) for m in planted.values()}
    recovered = sum(frozenset(g) in exact for g in found)
    merges = extra = 0
    for group in found:
        owners = {owner.get(p) for p in group}
        if owners == {None}:
            extra += 1
        elif len(owners) > 1:
            merges += 1
    return {
        "planted_groups": len(planted),
        "found_groups": len(found),
        "recovered_exactly": recovered,
        "recovered_fraction": round(recovered / max(len(planted), 1), 5),
        "false_merges": merges,
        "extra_groups_unplanted": extra,
    }


def unrelated_max(d: int) -> float:
    import faiss

    ((_, x),) = list(mixture(50_000, d, seed=1, chunk=50_000))
    D, _ = faiss.knn(x, x, 2, metric=faiss.METRIC_INNER_PRODUCT)
    return float(D[:, 1].max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threshold", type=float, default=0.97)
    parser.add_argument("--copy-low", type=float, default=0.975)
    parser.add_argument("--index-type", default="auto")
    parser.add_argument("--work", default="/tmp/bench-dups")
    parser.add_argument("--reuse", action="store_true", help="keep an index already imported")
    args = parser.parse_args()
    retrieval = os.path.join(os.path.dirname(sys.executable), "retrieval")
    os.makedirs(args.work, exist_ok=True)
    data = os.path.join(args.work, f"dups-{args.n}x{args.dim}-{args.copy_low}.parquet")
    truth = data + ".groups.json"
    directory = os.path.join(args.work, "index")
    out: dict = vars(args).copy()
    if not os.path.exists(truth):
        planted = write_parquet(data, args.n, args.dim, args.copy_low)
        with open(truth, "w") as fh:
            json.dump(planted, fh)
    with open(truth) as fh:
        planted = json.load(fh)
    if not (args.reuse and os.path.isdir(directory)):
        shutil.rmtree(directory, ignore_errors=True)
        cmd = [retrieval, "import", data, "--index", directory, "--json"]
        seconds, rss, _ = run_isolated([*cmd, "--index-type", args.index_type])
        out["import"] = {"seconds": round(seconds, 1), "peak_rss_gib": round(rss, 2)}
    report = os.path.join(args.work, "dups.json")
    cmd = [retrieval, "dups", "--index", directory, "--threshold", str(args.threshold)]
    seconds, rss, _ = run_isolated([*cmd, "--json", "-o", report, "-q"])
    out["dups"] = {"seconds": round(seconds, 1), "peak_rss_gib": round(rss, 2)}
    with open(report) as fh:
        result = json.load(fh)
    found = [[m["path"] for m in g["members"]] for g in result["groups"]]
    out["index_type"] = json.loads(
        run_isolated([retrieval, "info", "--index", directory, "--json"])[2]
    ).get("index_type")
    out["score"] = score(found, planted)
    out["unrelated_max_cosine_50k_sample"] = round(unrelated_max(args.dim), 4)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
