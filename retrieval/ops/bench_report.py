"""The records `retrieval bench` returns: one `Stage` per measured stage, one `BenchReport`."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stage:
    """One measured stage: `images` per round, wall seconds of each round, and memory.

    `peak_rss`: this process's peak RSS in bytes during the stage; `rss_growth`: how far
    that peak rose above the RSS the stage started with (what the stage itself needed).
    """

    name: str
    images: int
    seconds: list[float] = field(default_factory=list)
    peak_rss: int = 0
    rss_growth: int = 0

    @property
    def images_per_second(self) -> float:
        median = statistics.median(self.seconds) if self.seconds else 0.0
        return self.images / median if median > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "images_per_second": round(self.images_per_second, 3),
            "seconds": [round(s, 4) for s in self.seconds],
            "peak_rss_mb": round(self.peak_rss / 2**20, 1),
            "rss_growth_mb": round(self.rss_growth / 2**20, 1),
        }


@dataclass
class BenchReport:
    """Everything one bench run measured; `to_dict()` is the `--json` output."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    corpus: dict[str, Any]
    stages: dict[str, Stage]
    search: dict[str, float] = field(default_factory=dict)  # ms, plus vectors, query_megapixels
    worker_peak_rss: int = 0  # bytes

    def ratio(self, stage: str, reference: str) -> float | None:
        a, b = self.stages.get(stage), self.stages.get(reference)
        if not a or not b or not b.images_per_second:
            return None
        return a.images_per_second / b.images_per_second

    def to_dict(self) -> dict[str, Any]:
        ratios = {f"{a}_vs_{b}": self.ratio(a, b) for _, a, b in _RATIOS}
        return {
            "machine": self.machine,
            "settings": self.settings,
            "corpus": self.corpus,
            "stages": {name: stage.to_dict() for name, stage in self.stages.items()},
            "ratios": {k: round(v, 3) for k, v in ratios.items() if v is not None},
            "search": {k: round(v, 2) for k, v in self.search.items()},
            "decode_worker_peak_rss_mb": round(self.worker_peak_rss / 2**20, 1),
        }

    def lines(self) -> list[str]:
        """The human-readable report."""
        m, s, c = self.machine, self.settings, self.corpus
        gpu = f", {m['gpu']}" if "gpu" in m else ""
        out = [
            f"machine: {m['cpu']} ({m['cpus']} CPUs{gpu}), torch {m['torch']}, "
            f"native bf16 on CPU: {'yes' if m['native_bf16_cpu'] else 'no'}",
            f"model: {s['model']} on {s['device']}, {s['precision']}, batch {s['batch_size']}, "
            f"{s['workers']} decode workers, {s['threads']} torch threads",
            f"images: {c['files']} files, {c['megapixels_mean']:.1f} MP mean ({c['source']})",
        ]
        if draft := c.get("largest_jpeg_ms"):
            out.append(
                f"largest JPEG ({draft['megapixels']:.0f} MP): {draft['draft']:.0f} ms to decode "
                f"with JPEG draft, {draft['full']:.0f} ms without"
            )
        out += ["", f"{'stage':<12} {'img/s':>9} {'peak RSS MB':>12} {'(+MB)':>7}   seconds"]
        for name, stage in self.stages.items():
            rounds = " ".join(f"{t:.2f}" for t in stage.seconds)
            out.append(
                f"{name:<12} {stage.images_per_second:>9.2f} {stage.peak_rss / 2**20:>12.0f} "
                f"{stage.rss_growth / 2**20:>+7.0f}   {rounds}"
            )
        for label, a, b in _RATIOS:
            if (value := self.ratio(a, b)) is not None:
                out.append(f"{label}: {value:.2f}")
        if q := self.search:
            out.append(
                f"search: one {q['query_megapixels']:.1f} MP query image against "
                f"{int(q['vectors'])} vectors: {q['total']:.0f} ms = embed {q['embed']:.0f} + "
                f"load index {q['load']:.0f} + search {q['search']:.0f}; "
                f"{q['warm']:.0f} ms with the index already loaded"
            )
        out.append(f"decode workers' peak RSS: {self.worker_peak_rss / 2**20:.0f} MB")
        return out


#: (label, stage, reference): the ratios the targets are stated in.
_RATIOS = (
    ("end-to-end / model", "end_to_end", "model"),
    ("end-to-end / naive", "end_to_end", "naive"),
)
