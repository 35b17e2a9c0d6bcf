"""`evaluate --plot`: the duplicate pairs' precision-recall curve over the threshold sweep,
drawn with matplotlib (optional: `pip install 'retrieval[plot]'`)."""

from __future__ import annotations

import os
from typing import Any

from ..errors import UsageError
from .evaluating import DuplicateScores


def require_matplotlib() -> Any:
    """matplotlib's pyplot on a non-interactive backend; UsageError when not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError(
            "--plot needs matplotlib, which is not installed: pip install 'retrieval[plot]' "
            "(or leave out --plot; --json gives the sweep's numbers)"
        ) from None
    return plt


def plot_pairs(dups: DuplicateScores, path: str | os.PathLike[str]) -> None:
    """Draw recall (x) against precision (y), one point per threshold with a precision,
    the threshold asked for and the best-F1 one marked; write it to `path` (PNG, SVG...)."""
    plt = require_matplotlib()
    points = [s for s in dups.sweep if s.precision is not None and s.recall is not None]
    figure, axes = plt.subplots(figsize=(6, 5))
    try:
        axes.plot([s.recall for s in points], [s.precision for s in points], marker=".")
        for label, score in (("threshold", dups.at_threshold), ("best F1", dups.best)):
            if score is not None and score.precision is not None:
                axes.scatter([score.recall], [score.precision], zorder=3)
                axes.annotate(f"{label} {score.threshold:.2f}", (score.recall, score.precision))
        axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
        axes.set_title(f"duplicate pairs ({dups.true_pairs} true)")
        try:
            figure.savefig(os.fspath(path))
        except OSError as exc:
            raise UsageError(f"cannot write {os.fspath(path)}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
