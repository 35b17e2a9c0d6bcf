"""The arithmetic of `evaluate`, on vectors: leave-one-out retrieval metrics and duplicate-pair
precision/recall over cosine thresholds. numpy only; exact (brute-force) search.

Retrieval, for every query q (each embedded image in turn) of class c:

* the ranking is every other embedded image by cosine similarity to q, highest first (ties:
  lower index first); q itself is excluded. The list has L = min(k, n - 1) items.
* R_q = the other images of class c; rel(i) = 1 when the i-th item is in R_q.
* precision@k = (sum of rel(i), i <= L) / L
* recall@k = (sum of rel(i), i <= L) / |R_q|
* AP@k = (sum over i <= L of precision@i * rel(i)) / min(k, |R_q|), so a list whose first
  min(k, |R_q|) items are all relevant scores 1.
* A query with |R_q| = 0 (the only image of its class) has no relevant item: its metrics are
  undefined, it is counted in `no_relevant` and left out of every mean.

Per class: the mean over its queries; overall: the mean over all queries (micro), and the
mean of the per-class means (macro). mAP@k is the mean of AP@k.

Duplicates: the true pairs are unordered {a, b}; a pair is predicted at threshold t when
cos(a, b) >= t. precision = TP / predicted, recall = TP / true, F1 their harmonic mean;
precision is undefined (None) with nothing predicted; recall and F1 with no true pair; F1 is 0
when no true pair is predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Queries scored per block: (block, n) float32 similarities stay ~40 MB at n = 10,000.
QUERY_BLOCK = 1024


@dataclass(frozen=True)
class Scores:
    """Means over the queries that have a relevant item; None where there is none."""

    queries: int
    no_relevant: int
    map_at_k: float | None
    precision_at_k: float | None
    recall_at_k: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "queries": self.queries,
            "no_relevant": self.no_relevant,
            "map": self.map_at_k,
            "precision": self.precision_at_k,
            "recall": self.recall_at_k,
        }


@dataclass(frozen=True)
class RetrievalScores:
    """Per-query arrays (NaN for queries without a relevant item), aggregated on demand."""

    k: int
    average_precision: np.ndarray  # (n,) float64
    precision: np.ndarray  # (n,) float64
    recall: np.ndarray  # (n,) float64

    def over(self, mask: np.ndarray) -> Scores:
        """The means over the queries selected by `mask` ((n,) bool)."""
        defined = mask & ~np.isnan(self.average_precision)
        count = int(defined.sum())

        def mean(values: np.ndarray) -> float | None:
            return float(values[defined].mean()) if count else None

        return Scores(
            queries=int(mask.sum()),
            no_relevant=int(mask.sum()) - count,
            map_at_k=mean(self.average_precision),
            precision_at_k=mean(self.precision),
            recall_at_k=mean(self.recall),
        )


def retrieval_scores(xb: np.ndarray, labels: Sequence[int], k: int) -> RetrievalScores:
    """Leave-one-out metrics for `xb` ((n, d) float32, L2-normalised) whose i-th row has
    class `labels[i]`; see the module docstring for the definitions."""
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    sizes = np.bincount(y, minlength=int(y.max()) + 1 if n else 0)
    ap, precision, recall = (np.full(n, np.nan) for _ in range(3))
    depth = min(k, n - 1)
    if depth < 1:
        return RetrievalScores(k, ap, precision, recall)
    for start in range(0, n, QUERY_BLOCK):
        rows = np.arange(start, min(n, start + QUERY_BLOCK))
        ranked = _top(xb[rows] @ xb.T, rows, depth)  # (b, depth) ids
        rel = (y[ranked] == y[rows, None]).astype(np.float64)
        relevant = (sizes[y[rows]] - 1).astype(np.float64)
        hits = rel.cumsum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap[rows] = (hits / np.arange(1, depth + 1) * rel).sum(1) / np.minimum(k, relevant)
            precision[rows] = hits[:, -1] / depth
            recall[rows] = hits[:, -1] / relevant
    undefined = sizes[y] <= 1
    for values in (ap, precision, recall):
        values[undefined] = np.nan
    return RetrievalScores(k, ap, precision, recall)


def _top(similarities: np.ndarray, rows: np.ndarray, depth: int) -> np.ndarray:
    """The `depth` most similar ids per row, best first, ties by lower id; the query's own
    column (rows[i]) excluded."""
    similarities[np.arange(len(rows)), rows] = -np.inf
    n = similarities.shape[1]
    if depth < n - 1:
        part = np.argpartition(-similarities, depth, axis=1)[:, : depth + 1]
    else:
        part = np.broadcast_to(np.arange(n), similarities.shape)
    scores = np.take_along_axis(similarities, part, axis=1)
    order = np.lexsort((part, -scores), axis=1)[:, :depth]
    return np.take_along_axis(part, order, axis=1)


# -- duplicates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairScore:
    """Pair precision/recall/F1 at one cosine threshold (None: undefined, see above)."""

    threshold: float
    predicted: int
    true_positives: int
    precision: float | None
    recall: float | None
    f1: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "predicted": self.predicted,
            "true_positives": self.true_positives,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


def pair_scores(
    xb: np.ndarray, true_pairs: set[tuple[int, int]], thresholds: Sequence[float]
) -> list[PairScore]:
    """PairScore per threshold for the rows of `xb` ((n, d) float32, L2-normalised), with
    `true_pairs` as (i, j), i < j. A true pair with a row missing from `xb` (an image that
    could not be embedded) is passed with negative ids: it is never predicted, so it counts
    as missed. Every pair's cosine is computed (n^2 / 2), a block of rows at a time."""
    levels = np.asarray(sorted(thresholds), dtype=np.float64)
    kept = np.array(sorted((i, j) for i, j in true_pairs if i >= 0 and j >= 0), np.int64)
    predicted, true_scores = _pair_counts(
        np.ascontiguousarray(xb, dtype=np.float32), levels, kept.reshape(-1, 2)
    )
    out = []
    for level, count in zip(levels, predicted, strict=True):
        tp = int((true_scores >= np.float32(level)).sum())
        out.append(_pair_score(float(level), int(count), tp, len(true_pairs)))
    return out


def _pair_counts(
    xb: np.ndarray, levels: np.ndarray, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(for each level, ascending, how many pairs i < j have cos >= level; the cosine of
    each pair in `kept` ((m, 2), i < j)). Both come from the same float32 products, so a
    true pair counted as predicted is always among the predicted."""
    edges = levels.astype(np.float32)
    counts = np.zeros(len(edges) + 1, dtype=np.int64)
    true_scores = np.zeros(len(kept), dtype=np.float32)
    n = len(xb)
    for start in range(0, n, QUERY_BLOCK):
        block = xb[start : start + QUERY_BLOCK] @ xb.T  # (b, n)
        upper = np.arange(n)[None, :] > np.arange(start, start + len(block))[:, None]
        counts += np.bincount(
            np.searchsorted(edges, block[upper], side="right"), minlength=len(counts)
        )
        mine = (kept[:, 0] >= start) & (kept[:, 0] < start + len(block))
        true_scores[mine] = block[kept[mine, 0] - start, kept[mine, 1]]
    # a score whose searchsorted index is s is >= edges[:s]: pairs >= edge e have s > e
    return counts[::-1].cumsum()[::-1][1:], true_scores


def _pair_score(level: float, predicted: int, tp: int, true: int) -> PairScore:
    precision = tp / predicted if predicted else None
    recall = tp / true if true else None
    if recall is None:
        f1 = None
    elif tp == 0:
        f1 = 0.0
    else:
        f1 = 2 * tp / (predicted + true)  # = 2PR / (P + R)
    return PairScore(round(level, 6), predicted, tp, precision, recall, f1)


def best_threshold(sweep: Sequence[PairScore]) -> PairScore | None:
    """The threshold with the best F1; ties go to the highest threshold (fewest false
    positives). None when no threshold finds a true pair (every F1 is 0 or undefined)."""
    scored = [s for s in sweep if s.f1]
    return max(scored, key=lambda s: (s.f1, s.threshold)) if scored else None
