"""The records `retrieval bench` returns: one `Stage` per measured stage, the machine's
overlap `Limit`, and one `BenchReport` holding them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stage:
    """One measured stage: `images` per round, wall seconds of each round, and memory.

    `cpu_seconds`: core-seconds each round used, for the stages whose cost bench measures
    (empty otherwise). `peak_rss`: this process's peak RSS in bytes during the stage;
    `rss_growth`: how far that peak rose above the RSS the stage started with.
    """

    name: str
    images: int
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    peak_rss: int = 0
    rss_growth: int = 0

    @property
    def images_per_second(self) -> float:
        median = statistics.median(self.seconds) if self.seconds else 0.0
        return self.images / median if median > 0 else 0.0

    @property
    def core_seconds_per_image(self) -> float | None:
        """Median core-seconds of a round / images; None when not measured."""
        if not self.cpu_seconds or not self.images:
            return None
        return statistics.median(self.cpu_seconds) / self.images

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "images": self.images,
            "images_per_second": round(self.images_per_second, 3),
            "seconds": [round(s, 4) for s in self.seconds],
        }
        if (cost := self.core_seconds_per_image) is not None:
            out["core_ms_per_image"] = round(cost * 1000, 2)
            out["cpu_seconds"] = [round(s, 4) for s in self.cpu_seconds]
        out["peak_rss_mb"] = round(self.peak_rss / 2**20, 1)
        out["rss_growth_mb"] = round(self.rss_growth / 2**20, 1)
        return out


@dataclass(frozen=True)
class Limit:
    """The most images/s this machine can index with perfect overlap of its stages.

    CPU: `cores / (decode_core_s + model_core_s)`: every core busy, decoding or running the
    model, never waiting. CUDA: the model runs on the GPU, so the cores pay decoding plus the
    model's host side (`model_core_s`: batching, copies, launches) and the GPU caps at its
    model-only rate: the smaller of the two, named by `bound` ('cpu' or 'gpu').
    """

    cores: int
    decode_core_s: float  # per image: read + hash + decode + resize, one core
    model_core_s: float  # per image: CPU time of every torch thread during model-only
    images_per_second: float
    bound: str

    def share(self, images_per_second: float) -> float | None:
        """`images_per_second` as a fraction of the limit; None without a limit."""
        if self.images_per_second <= 0:
            return None
        return images_per_second / self.images_per_second

    def cores_busy(self, end_to_end: Stage) -> float | None:
        """The share of the cores' time a stage kept them busy: its core-seconds per image x
        its images/s / cores. Below 1: cores idled (waiting on another stage), or another
        program held them (on a shared machine the two look alike)."""
        cost = end_to_end.core_seconds_per_image
        if cost is None:
            return None
        return cost * end_to_end.images_per_second / self.cores

    def to_dict(self, end_to_end: Stage) -> dict[str, Any]:
        share = self.share(end_to_end.images_per_second)
        out = {
            "cores": self.cores,
            "decode_core_ms": round(self.decode_core_s * 1000, 2),
            "model_core_ms": round(self.model_core_s * 1000, 2),
            "images_per_second": round(self.images_per_second, 3),
            "bound": self.bound,
            "end_to_end_share": None if share is None else round(share, 3),
        }
        if (busy := self.cores_busy(end_to_end)) is not None:
            cost = end_to_end.core_seconds_per_image or 0.0
            out.update(end_to_end_core_ms=round(cost * 1000, 2), cores_busy=round(busy, 3))
        return out


def overlap_limit(
    cores: int,
    decode_core_s: float,
    model_core_s: float,
    device: str,
    model_images_per_second: float | None = None,
) -> Limit:
    """The `Limit` for these per-image costs (core-seconds) on `cores` CPUs; on CUDA also
    capped by the GPU's `model_images_per_second`. A zero cost gives a zero (unknown) limit."""
    if cores < 1:
        raise ValueError(f"cores must be at least 1, not {cores}")
    total = decode_core_s + model_core_s
    cpu = cores / total if total > 0 else 0.0
    if device == "cuda" and model_images_per_second and model_images_per_second < cpu:
        return Limit(cores, decode_core_s, model_core_s, model_images_per_second, "gpu")
    return Limit(cores, decode_core_s, model_core_s, cpu, "cpu")


@dataclass
class BenchReport:
    """Everything one bench run measured; `to_dict()` is the `--json` output."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    corpus: dict[str, Any]
    stages: dict[str, Stage]
    search: dict[str, float] = field(default_factory=dict)  # ms, plus vectors, query_megapixels
    worker_peak_rss: int = 0  # bytes
    limit: Limit | None = None

    def ratio(self, stage: str, reference: str) -> float | None:
        a, b = self.stages.get(stage), self.stages.get(reference)
        if not a or not b or not b.images_per_second:
            return None
        return a.images_per_second / b.images_per_second

    def end_to_end(self) -> Stage:
        return self.stages.get("end_to_end") or Stage("end_to_end", 0)

    def to_dict(self) -> dict[str, Any]:
        ratios = {f"{a}_vs_{b}": self.ratio(a, b) for _, a, b in _RATIOS}
        limit = self.limit.to_dict(self.end_to_end()) if self.limit else None
        return {
            "limit": limit,
            "machine": self.machine,
            "settings": self.settings,
            "corpus": self.corpus,
            "stages": {name: stage.to_dict() for name, stage in self.stages.items()},
            "ratios": {k: round(v, 3) for k, v in ratios.items() if v is not None},
            "search": {k: round(v, 2) for k, v in self.search.items()},
            "decode_worker_peak_rss_mb": round(self.worker_peak_rss / 2**20, 1),
        }

    def lines(self) -> list[str]:
        """The human-readable report; the first line is the headline (share of the limit)."""
        m, s, c = self.machine, self.settings, self.corpus
        gpu = f", {m['gpu']}" if "gpu" in m else ""
        out = _headline(self.limit, self.end_to_end())
        out += [
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
        out += ["", _TABLE_HEADER]
        for name, stage in self.stages.items():
            rounds = " ".join(f"{t:.2f}" for t in stage.seconds)
            cost = stage.core_seconds_per_image
            cost_text = f"{cost * 1000:>12.1f}" if cost is not None else f"{'':>12}"
            out.append(
                f"{name:<14} {stage.images_per_second:>9.2f} {cost_text} "
                f"{stage.peak_rss / 2**20:>12.0f} {stage.rss_growth / 2**20:>+7.0f}   {rounds}"
            )
        for label, a, b in _RATIOS:
            if (value := self.ratio(a, b)) is not None:
                out.append(f"{label}: {value:.2f}{'x' if b == 'plain' else ''}")
        if q := self.search:
            out.append(
                f"search: one {q['query_megapixels']:.1f} MP query image against "
                f"{int(q['vectors'])} vectors: {q['total']:.0f} ms = embed {q['embed']:.0f} + "
                f"load index {q['load']:.0f} + search {q['search']:.0f}; "
                f"{q['warm']:.0f} ms with the index already loaded"
            )
        out.append(f"decode workers' peak RSS: {self.worker_peak_rss / 2**20:.0f} MB")
        return out


_TABLE_HEADER = (
    f"{'stage':<14} {'img/s':>9} {'core-ms/img':>12} {'peak RSS MB':>12} {'(+MB)':>7}   seconds"
)


def _headline(limit: Limit | None, stage: Stage) -> list[str]:
    end_to_end = stage.images_per_second
    if limit is None or (share := limit.share(end_to_end)) is None:
        return []
    costs = (
        f"{limit.cores} cores / (decode {limit.decode_core_s * 1000:.1f} + model "
        f"{limit.model_core_s * 1000:.1f} core-ms per image)"
    )
    if limit.bound == "gpu":
        costs = f"the GPU's model-only rate; the cores allow more: {costs}"
    out = [
        f"end-to-end {end_to_end:.1f} img/s = {share:.2f} of this machine's limit "
        f"{limit.images_per_second:.1f} img/s ({costs})"
    ]
    if (busy := limit.cores_busy(stage)) is not None:
        used = (stage.core_seconds_per_image or 0.0) * 1000
        alone = (limit.decode_core_s + limit.model_core_s) * 1000
        out.append(
            f"end-to-end used {used:.1f} core-ms per image (decode + model alone: {alone:.1f}); "
            f"it kept the {limit.cores} cores busy {busy:.2f} of its time"
        )
    return out


#: (label, stage, reference): the ratios the targets are stated in.
_RATIOS = (
    ("end-to-end / model", "end_to_end", "model"),
    ("end-to-end / plain loop", "end_to_end", "plain"),
    ("retrieval index (whole process) / plain loop", "index_process", "plain"),
)
