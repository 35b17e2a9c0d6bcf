"""The library functions that need no index: `evaluate` (how well a model retrieves
labelled folders) and `convert_weights` (another implementation's checkpoint -> timm keys).
Same layer as `api`: they call ops/ and are re-exported from `retrieval`."""

from __future__ import annotations

import os

from . import defaults
from .errors import UsageError
from .ops import converting, eval_plot, evaluating
from .ops.adding import Notify
from .ops.indexing import Progress
from .specs import WeightsSpec


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
    plot: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    notify: Notify | None = None,
    progress: Progress | None = None,
) -> evaluating.EvaluationReport:
    """Score how well `model` retrieves the labelled images under `directory` (one
    subfolder per class): leave-one-out mAP@k, precision@k, recall@k per class and overall;
    with `duplicates` (an imagededup ground-truth JSON), pair precision/recall/F1 at
    `threshold` and over a sweep; `plot` writes the sweep's precision-recall curve (needs
    matplotlib). Needs no index and writes none. See `retrieval.ops.eval_metrics` for the
    definitions."""
    if plot is not None:
        if duplicates is None:
            raise UsageError("--plot draws the duplicates' curve: give --duplicates TRUTH.json")
        eval_plot.require_matplotlib()  # before minutes of embedding
    report = evaluating.evaluate(
        directory,
        model=model,
        weights=weights,
        device=device,
        precision=precision,
        k=k,
        duplicates=duplicates,
        threshold=threshold,
        workers=workers,
        notify=notify,
        progress=progress,
    )
    if plot is not None and report.duplicates is not None:
        eval_plot.plot_pairs(report.duplicates, plot)
    return report


def convert_weights(
    source: str | os.PathLike[str], model: str, output: str | os.PathLike[str]
) -> converting.ConvertReport:
    """Write `source`'s tensors (another implementation's key names, same architecture)
    renamed in order to timm `model`'s keys as `output` (.safetensors), for
    `weights=WeightsSpec('file', output)`. Refuses a file whose tensor count or shapes
    differ (WeightsMismatch naming the first)."""
    return converting.convert_weights(source, model, output)
