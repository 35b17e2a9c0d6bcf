"""Benchmark (not a unit test): what a PCA reduction costs in recall, whitened or not.

    .venv/bin/python tests/bench_reduction.py --n 200000 --queries 500

N vectors of bench_ann's 2048-d mixture with a 1/i variance spectrum; for each reduction
(dim 128/256/512, plain or whitened, learned by `reduction.learn` on all N) and each re-rank
factor, exact search in the reduced space fetches rerank x 10 candidates, which are re-scored
with the full vectors; recall@10 is measured against exact search over the full vectors.
This isolates the reduction from any ANN index. With `--pq`, the same is measured for
FAISS's IVF256,PQ512 (the codes `auto` picks for 2048-d under a 1 GB budget) at nprobe 32;
its build takes about 13 minutes for 200k vectors on 2 cores. Prints one line per setting.

    .venv/bin/python tests/bench_reduction.py --n 200000 --pq
"""

from __future__ import annotations

import argparse
import os
import sys

import faiss
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_ann  # noqa: E402

from retrieval.store import reduction  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--spectrum", type=float, default=1.0)
    parser.add_argument("--pq", action="store_true", help="also IVF256,PQ512 (slow)")
    args = parser.parse_args()
    d = 2048
    xb = np.concatenate([x for _, x in bench_ann.mixture(args.n, d, 1, spectrum=args.spectrum)])
    ((_, xq),) = list(bench_ann.mixture(args.queries, d, 99, args.queries, args.spectrum))
    _, truth = faiss.knn(xq, xb, 10, metric=faiss.METRIC_INNER_PRODUCT)
    batches = [xb[i : i + 50_000] for i in range(0, args.n, 50_000)]
    if args.pq:
        index = faiss.index_factory(d, "IVF256,PQ512", faiss.METRIC_INNER_PRODUCT)
        index.train(xb[np.random.default_rng(0).choice(args.n, 40_000, replace=False)])
        index.add(xb)
        faiss.extract_index_ivf(index).nprobe = 32
        for rerank in (1, 8, 32):
            _, cand = index.search(xq, 10 * rerank)
            print(f"IVF256,PQ512 rerank {rerank:2d}: recall@10 {_rerank(xb, xq, cand, truth):.3f}")
    for dim in (128, 256, 512):
        for whiten in (False, True):
            learned = reduction.learn(batches, args.n, dim, whiten)
            yb, yq = learned.apply(xb), learned.apply(xq)
            for rerank in (1, 8, 32):
                _, cand = faiss.knn(yq, yb, 10 * rerank, metric=faiss.METRIC_INNER_PRODUCT)
                hit = _rerank(xb, xq, cand, truth)
                print(
                    f"dim {dim:4d} {'whitened' if whiten else 'plain   '} rerank {rerank:2d}: "
                    f"recall@10 {hit:.3f} (variance kept {learned.explained:.3f})",
                    flush=True,
                )


def _rerank(xb: np.ndarray, xq: np.ndarray, cand: np.ndarray, truth: np.ndarray) -> float:
    """Recall@10 after re-scoring candidate ids `cand` (nq, c) with the full vectors."""
    scores = np.einsum("qcd,qd->qc", xb[np.maximum(cand, 0)], xq)
    scores[cand < 0] = -np.inf
    top = np.take_along_axis(cand, np.argsort(-scores, axis=1)[:, :10], axis=1)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, truth, strict=True)]))


if __name__ == "__main__":
    main()
