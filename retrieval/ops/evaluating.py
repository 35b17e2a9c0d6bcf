"""`evaluate`: how well a model retrieves labelled images, and finds known duplicates.

DIR's first-level subfolders are the classes (files directly in DIR are not counted); every
image under a class folder (recursively, the index's extensions) is embedded with the same
decoder and model as `index`, in memory (no index is written). Then every image is a query
against all the others (exact search, itself excluded): mAP@k, precision@k and recall@k per
class and overall, as defined in `eval_metrics`. With a ground-truth file of duplicates
(imagededup's format: {"name": ["dup", ...]}, names relative to DIR), pair precision, recall
and F1 at a cosine threshold, a sweep of thresholds and the one with the best F1.

Images that cannot be read or decoded are listed in the report and left out: they are
neither queries nor relevant items (a true duplicate pair with one counts as missed).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import defaults
from ..errors import UsageError
from ..pathnames import display, to_bytes
from ..sources.scan import scan
from ..specs import WeightsSpec
from . import embedders, pipeline
from .eval_metrics import (
    PairScore,
    Scores,
    best_threshold,
    pair_scores,
    retrieval_scores,
)

Progress = Callable[[int, int], None]
Notify = Callable[[str], None]


@dataclass(frozen=True)
class ClassScores:
    """One class: its folder name, images embedded, and the means over its queries."""

    name: str
    images: int
    scores: Scores


@dataclass(frozen=True)
class DuplicateScores:
    """Pair scores at the threshold asked for, the sweep, and the sweep's best F1."""

    truth_file: str
    true_pairs: int
    at_threshold: PairScore
    sweep: tuple[PairScore, ...]
    best: PairScore | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "truth_file": self.truth_file,
            "true_pairs": self.true_pairs,
            "at_threshold": self.at_threshold.to_dict(),
            "best": self.best.to_dict() if self.best else None,
            "suggested_threshold": self.best.threshold if self.best else None,
            "sweep": [s.to_dict() for s in self.sweep],
        }


@dataclass(frozen=True)
class EvaluationReport:
    """What `evaluate` measured. `failed`: (path relative to DIR, reason) per image left
    out; `ignored`: image files directly in DIR, in no class."""

    directory: str
    model: str
    weights: str
    k: int
    images: int
    classes: tuple[ClassScores, ...]
    overall: Scores
    macro_map: float | None
    failed: tuple[tuple[str, str], ...] = ()
    ignored: int = 0
    duplicates: DuplicateScores | None = None
    seconds: float = 0.0
    vectors: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "model": self.model,
            "weights": self.weights,
            "k": self.k,
            "images": self.images,
            "overall": {**self.overall.to_dict(), "macro_map": self.macro_map},
            "classes": [
                {"name": c.name, "images": c.images, **c.scores.to_dict()} for c in self.classes
            ],
            "failed": [{"path": p, "error": e} for p, e in self.failed],
            "ignored": self.ignored,
            "duplicates": self.duplicates.to_dict() if self.duplicates else None,
            "seconds": round(self.seconds, 3),
        }

    def lines(self) -> list[str]:
        """The report as a table for people."""
        k = self.k
        width = max([len("overall"), *(len(c.name) for c in self.classes)])
        out = [
            f"{self.images} images in {len(self.classes)} classes, {self.model} "
            f"({self.weights}), k={k}, {self.seconds:.1f} s",
            f"{'class':<{width}}  {'images':>6}  {f'mAP@{k}':>7}  {f'P@{k}':>7}  {f'R@{k}':>7}",
        ]
        for row in self.classes:
            out.append(_row(row.name, width, row.images, row.scores))
        out.append(_row("overall", width, self.images, self.overall))
        out.append(f"macro mAP@{k} (mean over classes): {_fmt(self.macro_map)}")
        lonely = self.overall.no_relevant
        if lonely:
            out.append(
                f"{lonely} image(s) are alone in their class: no relevant item, left out of "
                "the means (add images to those classes)"
            )
        if self.ignored:
            out.append(f"{self.ignored} image(s) directly in DIR belong to no class: ignored")
        out += [f"failed: {path}: {error}" for path, error in self.failed]
        if self.duplicates:
            out += _duplicate_lines(self.duplicates)
        return out


def _row(name: str, width: int, images: int, scores: Scores) -> str:
    values = (scores.map_at_k, scores.precision_at_k, scores.recall_at_k)
    return f"{name:<{width}}  {images:>6}  " + "  ".join(f"{_fmt(v):>7}" for v in values)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _duplicate_lines(dups: DuplicateScores) -> list[str]:
    at, best = dups.at_threshold, dups.best
    out = [
        f"duplicates ({dups.true_pairs} true pairs in {dups.truth_file}):",
        f"  at threshold {at.threshold:.2f}: precision {_fmt(at.precision)}, recall "
        f"{_fmt(at.recall)}, F1 {_fmt(at.f1)} ({at.true_positives} of {at.predicted} "
        "predicted pairs true)",
    ]
    if best is None:
        out.append("  no threshold of the sweep finds a true pair: no threshold to suggest")
    else:
        out.append(
            f"  best F1 {_fmt(best.f1)} at threshold {best.threshold:.2f} (precision "
            f"{_fmt(best.precision)}, recall {_fmt(best.recall)}): suggested threshold"
        )
    return out


# -- the use case -------------------------------------------------------------------------------


def evaluate(
    directory: str | os.PathLike[str],
    *,
    model: str | None = None,
    weights: WeightsSpec | None = None,
    device: str = "auto",
    precision: str = "auto",
    k: int = defaults.TOP_K,
    duplicates: str | os.PathLike[str] | None = None,
    threshold: float = defaults.DUPS_THRESHOLD,
    workers: int | None = None,
    max_megapixels: float = defaults.MAX_MEGAPIXELS,
    notify: Notify | None = None,
    progress: Progress | None = None,
) -> EvaluationReport:
    """Embed the labelled images under `directory` and score leave-one-out retrieval (and
    duplicates, given a ground-truth file). Raises UsageError for a folder without class
    subfolders or images, a bad `k`/`threshold`, or a malformed ground-truth file (all
    before the model is loaded); ModelError for the model."""
    started = time.monotonic()
    notify = notify or (lambda message: None)
    if k < 1:
        raise UsageError(f"k must be at least 1, not {k}")
    if not 0.0 < threshold <= 1.0:
        raise UsageError(f"threshold must be in (0, 1], not {threshold}")
    found = find_labelled(directory)
    truth = read_truth(duplicates, found.relative) if duplicates is not None else None
    name, spec = model or defaults.MODEL, weights or WeightsSpec("pretrained")
    embedder = embedders.load(name, spec, device, precision)
    embedders.configure_threads(embedder.device, None)
    notify(f"embedding {len(found.paths)} images with {name} on {embedder.describe()}")
    rows, xb, failed = embed_paths(embedder, found.paths, workers, max_megapixels, progress)
    labels = [found.labels[i] for i in rows]
    scores = retrieval_scores(xb, labels, k)
    classes = _per_class(found.classes, labels, scores)
    means = [c.scores.map_at_k for c in classes if c.scores.map_at_k is not None]
    dup_scores = None
    if truth is not None:
        dup_scores = _duplicates(os.fspath(duplicates or ""), truth, rows, xb, threshold)
    return EvaluationReport(
        directory=os.fspath(directory),
        model=name,
        weights=embedder.info.weights.describe(),
        k=k,
        images=len(rows),
        classes=classes,
        overall=scores.over(np.ones(len(labels), bool)),
        macro_map=float(np.mean(means)) if means else None,
        failed=(*found.unreadable, *((found.relative[i], error) for i, error in failed)),
        ignored=found.ignored,
        duplicates=dup_scores,
        seconds=time.monotonic() - started,
        vectors=xb,
    )


def _per_class(names: Sequence[str], labels: Sequence[int], scores: Any) -> tuple[ClassScores, ...]:
    y = np.asarray(labels, dtype=np.int64)
    return tuple(
        ClassScores(name, int((y == c).sum()), scores.over(y == c)) for c, name in enumerate(names)
    )


def _duplicates(
    truth_file: str,
    truth: set[tuple[int, int]],
    rows: Sequence[int],
    xb: np.ndarray,
    threshold: float,
) -> DuplicateScores:
    """Pair scores with the truth's file indices turned into rows of `xb` (-1: not embedded)."""
    row_of = {file: row for row, file in enumerate(rows)}
    pairs = set()
    for a, b in truth:
        i, j = row_of.get(a, -1), row_of.get(b, -1)
        # a pair with an image left out stays in the count, with negative ids: never predicted
        pairs.add((min(i, j), max(i, j)) if i >= 0 and j >= 0 else (-1 - a, -1 - b))
    levels = sorted(set(defaults.EVAL_SWEEP) | {round(threshold, 6)})
    sweep = pair_scores(xb, pairs, levels)
    at = next(s for s in sweep if s.threshold == round(threshold, 6))
    return DuplicateScores(truth_file, len(truth), at, tuple(sweep), best_threshold(sweep))


# -- finding the classes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Labelled:
    """Image files under DIR's class folders, sorted; `relative`: their names relative to
    DIR with '/' separators (as a ground-truth file names them); `unreadable`: folders or
    files the walk could not read."""

    paths: list[bytes]
    labels: list[int]
    relative: list[str]
    classes: list[str]
    ignored: int
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (relative, why)


def find_labelled(directory: str | os.PathLike[str]) -> Labelled:
    """The images of each first-level subfolder of `directory` (hidden folders skipped).
    Raises UsageError when `directory` is missing or has no class folder with an image."""
    root = to_bytes(directory)
    shown = display(root)
    if not os.path.isdir(root):
        raise UsageError(f"{shown} is not a folder; pass a folder with one subfolder per class")
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    folders = [e for e in entries if e.is_dir() and not e.name.startswith(b".")]
    if not folders:
        raise UsageError(
            f"{shown} has no subfolders; evaluate needs one subfolder per class "
            f"(e.g. {shown}/cats/*.jpg, {shown}/dogs/*.jpg)"
        )
    paths: list[bytes] = []
    labels: list[int] = []
    classes: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for folder in folders:
        found = scan([os.fsdecode(folder.path)])
        unreadable += [(_relative(p.path, root), p.error) for p in found.problems]
        files = [f.path for f in found.files]
        if files:
            labels += [len(classes)] * len(files)
            classes.append(os.fsdecode(folder.name))
            paths += files
    if not paths:
        raise UsageError(f"the class folders of {shown} hold no images; add images to them")
    ignored = sum(1 for e in entries if e.is_file() and _is_image(e.name))
    relative = [_relative(p, root) for p in paths]
    return Labelled(paths, labels, relative, classes, ignored, unreadable)


def _relative(path: bytes, root: bytes) -> str:
    return os.fsdecode(os.path.relpath(path, root)).replace(os.sep, "/")


def _is_image(name: bytes) -> bool:
    return os.path.splitext(os.fsdecode(name))[1].lower() in defaults.EXTENSIONS


def read_truth(path: str | os.PathLike[str], names: Sequence[str]) -> set[tuple[int, int]]:
    """The duplicate pairs of an imagededup ground-truth file ({"name": ["dup", ...]}, names
    relative to DIR) as (i, j) indices into `names`, i < j; the mapping need not be
    symmetric. Raises UsageError, one line, for anything else."""
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise UsageError(f"cannot read {where}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where} is not JSON ({_first(exc)}); {_TRUTH_FORMAT}") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(d, str) for d in v) for v in data.values()
    ):
        raise UsageError(f"{where} is not a duplicates mapping; {_TRUTH_FORMAT}")
    index = {name: i for i, name in enumerate(names)}
    pairs: set[tuple[int, int]] = set()
    for name, dups in data.items():
        for other in [name, *dups]:
            if other not in index:
                raise UsageError(
                    f"{where} names {other!r}, which is not an image under a class folder of "
                    "DIR; names must be relative to DIR (e.g. 'cats/a.jpg')"
                )
        pairs.update((min(index[name], index[d]), max(index[name], index[d])) for d in dups)
    return {(i, j) for i, j in pairs if i != j}


_TRUTH_FORMAT = (
    'it must map each file to its duplicates, {"cats/a.jpg": ["cats/a_copy.jpg"], ...}, '
    "names relative to DIR"
)


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# -- embedding ----------------------------------------------------------------------------------


def embed_paths(
    embedder: Any,
    paths: Sequence[bytes],
    workers: int | None,
    max_megapixels: float,
    progress: Progress | None = None,
) -> tuple[list[int], np.ndarray, list[tuple[int, str]]]:
    """Decode (in worker processes) and embed `paths` in batches.

    Returns (the indices into `paths` that were embedded, their vectors (m, d) float32
    L2-normalised in that order, (index, reason) for each file that failed)."""
    device = embedder.device
    count = pipeline.plan_resources(device, workers).workers
    batch_size = pipeline.default_batch_size(device)
    rows: list[int] = []
    vectors: list[np.ndarray] = []
    failed: list[tuple[int, str]] = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if pending:
            vectors.append(embedder.embed(np.stack([p for _, p in pending])))
            rows.extend(i for i, _ in pending)
            pending.clear()

    stream = pipeline.decode_stream(list(paths), embedder.preprocess, max_megapixels, count)
    for i, result in enumerate(stream):
        if result.pixels is None:
            failed.append((i, result.error or "unreadable"))
        else:
            pending.append((i, result.pixels))
        if len(pending) >= batch_size:
            flush()
            if progress:
                progress(i + 1, len(paths))
    flush()
    if progress:
        progress(len(paths), len(paths))
    dim = embedder.dim
    xb = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
    return rows, xb.astype(np.float32, copy=False), failed
