"""Sharing the CPUs between decode workers and the model, from what each stage costs.

Which stage is slow depends on the machine and the images: a model in bf16 on a CPU with
native bf16 (resnet50: ~28 core-ms per image) is cheaper than decoding a large PNG (~45
core-ms), while the same model in fp32 on an AVX2 CPU (~170 core-ms) is not. So the split is
measured, not assumed: every decode worker reports the CPU seconds it spent per chunk, and
indexing reports the CPU seconds this process spent per batch (model and store). From these
per-image costs, `ideal_decode_cores` = cores x decode / (decode + model) is how many cores
must decode for neither stage to wait, and `next_split` rounds it into workers and threads.

CPU time, not wall time: it is not inflated when the two stages take turns on a core, so the
ratio holds however the split is set now. The sums decay (`DECAY` per batch) so the split
follows a folder whose images change kind. Decisions are pure functions of these numbers.

The cores are oversubscribed on purpose: torch keeps a thread on every core, and one decoder
more than the ideal runs beside them (`SPARE_WORKERS`). With passive OpenMP waiting
(`retrieval.embedding` sets it) a stage that waits sleeps and the other takes its core, so
neither stage's rounding leaves a core idle. Measured on 2 cores, `retrieval index` on an idle
machine (README, Performance): 2 decoders + 2 threads against the proportional split (1 + 2 on
JPEGs, 2 + 1 on PNGs), interleaved, were 1.11-1.17x faster in every regime tried (JPEGs bf16
and fp32, PNGs bf16). Before passive waiting the same oversubscription lost on a loaded
machine (threads spinning at barriers while a decoder held their core).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .pipeline import Resources, cpu_count, max_workers, plan_resources

#: Weight the sums keep per batch: ~5 batches of memory, enough to smooth one odd batch.
DECAY = 0.8
#: How far (in cores) the ideal must pass a rounding boundary before the split changes: noise
#: around a boundary then never flips workers back and forth.
MARGIN = 0.15
#: Decoders beyond the ideal number: one, so that rounding and a decoder's stalls (a large
#: file, disk) never leave the model waiting; the in-flight window bounds what it holds.
SPARE_WORKERS = 1
#: Batches that may hold the model's loading and warm-up (see `Balance.embedded`).
WARMUP_BATCHES = 1


#: Decode worker processes and torch intra-op threads: what `plan_resources` plans.
Split = Resources


@dataclass(frozen=True)
class Costs:
    """CPU seconds each stage spent, and on how many images."""

    decode_cpu_s: float
    decoded: float  # images (fractional once the sums decay)
    model_cpu_s: float
    embedded: float


def ideal_decode_cores(cores: int, costs: Costs) -> float | None:
    """Cores that must decode so that decoding keeps pace with the model (0..cores), or None
    before both stages have been measured."""
    if costs.decoded <= 0 or costs.embedded <= 0:
        return None
    decode = costs.decode_cpu_s / costs.decoded
    model = costs.model_cpu_s / costs.embedded
    if decode + model <= 0:
        return None
    return cores * decode / (decode + model)


def threads_for(cores: int, workers: int) -> int:
    """Torch threads beside `workers` decoders: every core. Decoders that wait on a full
    window sleep, and with passive OpenMP waiting so do the model's threads between batches,
    so the two stages share the cores by what each has to do."""
    del workers  # every split gives the model every core; kept for the split's signature
    return max(1, cores)


def next_split(current: Split, cores: int, costs: Costs, most_workers: int) -> Split:
    """The split for the next batches: workers = ceil(ideal decode cores) + `SPARE_WORKERS`,
    the ideal's rounding changed only once it is more than `MARGIN` outside the current
    range (hysteresis); workers stay within 1..min(cores, `most_workers`): beyond the cores
    decoders only take turns."""
    ideal = ideal_decode_cores(cores, costs)
    if ideal is None:
        return current
    needed = max(0, current.workers - SPARE_WORKERS)
    if ideal > needed + MARGIN or ideal < needed - 1 - MARGIN:
        needed = math.ceil(ideal)
    workers = max(1, min(needed + SPARE_WORKERS, cores, most_workers))
    return Split(workers, threads_for(cores, workers))


class Balance:
    """One run's split, rebalanced after each batch from the costs measured so far.

    `fixed`: the split given is kept (explicit --workers, or a GPU, whose model needs little
    CPU). Decode workers call `decoded`, the batch loop `embedded`; `split` is read by both.
    """

    def __init__(self, split: Split, cores: int, most_workers: int, fixed: bool = False) -> None:
        self.split = split
        self.cores = cores
        self.most_workers = most_workers
        self.fixed = fixed
        self._costs = Costs(0.0, 0, 0.0, 0)
        self._batches = 0

    @property
    def workers(self) -> int:
        return self.split.workers

    def decoded(self, images: int, cpu_s: float) -> None:
        """A worker decoded `images` in `cpu_s` CPU seconds."""
        c = self._costs
        self._costs = Costs(c.decode_cpu_s + cpu_s, c.decoded + images, c.model_cpu_s, c.embedded)

    def embedded(self, images: int, cpu_s: float) -> Split:
        """A batch of `images` cost this process `cpu_s` CPU seconds; returns the new split.

        The first batches also hold the model's loading and warm-up, which can only make the
        model look costlier: from them the split may only give decoding more cores, and
        their cost is not kept."""
        self._batches += 1
        if self.fixed or images <= 0:
            return self.split
        c = self._costs
        costs = Costs(c.decode_cpu_s, c.decoded, c.model_cpu_s + cpu_s, c.embedded + images)
        proposed = next_split(self.split, self.cores, costs, self.most_workers)
        if self._batches <= WARMUP_BATCHES:
            if proposed.workers > self.split.workers:
                self.split = proposed
            return self.split
        self.split = proposed
        self._costs = Costs(
            *(
                value * DECAY
                for value in (costs.decode_cpu_s, costs.decoded, costs.model_cpu_s, costs.embedded)
            )
        )
        return self.split


def for_run(device: str, workers: int | None) -> Balance:
    """An indexing run's split: `plan_resources`, then balanced on the CPU unless `workers`
    was given (explicit values win) or the model runs on a GPU (it needs little CPU)."""
    planned = plan_resources(device, workers)
    fixed = workers is not None or device != "cpu" or planned.workers == 0
    return Balance(Split(planned.workers, planned.threads), cpu_count(), max_workers(), fixed)
