"""The CPUs are shared between decode workers and the model from measured stage costs: more
workers when decoding is the costlier stage, fewer when the model is, one spare, torch on
every core; bounded, with hysteresis, never overriding --workers. The decode pool follows the
split mid-stream without losing, repeating or reordering a file, crash-redo included."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _procs import workers_of
from conftest import make_photos

from retrieval import Index
from retrieval.embedding.backbone import untrained
from retrieval.ops import pipeline
from retrieval.ops.balance import (
    Balance,
    Costs,
    Split,
    for_run,
    ideal_decode_cores,
    next_split,
    threads_for,
)
from retrieval.ops.indexing import IndexOptions
from retrieval.specs import Preprocess

PREPROCESS = Preprocess(64, 64, 72, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def costs(decode_ms: float, model_ms: float, images: int = 64) -> Costs:
    """Costs of `images` images at `decode_ms` and `model_ms` core-ms each."""
    return Costs(decode_ms * images / 1000, images, model_ms * images / 1000, images)


def test_decode_bound_gets_more_workers() -> None:
    """Large PNGs (45 core-ms) and a bf16 model (28 core-ms): 1.23 of 2 cores must decode (2
    workers, the spare capped by the cores); 9.9 of 16 cores (10 + a spare). Torch keeps
    every core."""
    assert ideal_decode_cores(2, costs(45, 28)) == pytest.approx(1.233, abs=1e-3)
    assert next_split(Split(1, 2), 2, costs(45, 28), most_workers=4) == Split(2, 2)
    assert next_split(Split(4, 12), 16, costs(45, 28), most_workers=32) == Split(11, 16)


def test_model_bound_gets_fewer_workers() -> None:
    """The same PNGs with fp32 on an AVX2 CPU (170 core-ms): 3.4 of 16 cores decode (4 + a
    spare); on 2 cores 0.42 (1 + a spare: both cores, the decoders sleep when ahead)."""
    assert next_split(Split(11, 16), 16, costs(45, 170), most_workers=32) == Split(5, 16)
    assert next_split(Split(2, 2), 2, costs(45, 170), most_workers=4) == Split(2, 2)


@pytest.mark.parametrize(
    ("cores", "decode_ms", "model_ms", "most", "expected"),
    [
        (16, 100, 0.001, 32, Split(16, 16)),  # all decoding: never beyond the cores
        (16, 100, 0.001, 5, Split(5, 16)),  # nor beyond the most workers allowed
        (16, 0.0, 100, 32, Split(1, 16)),  # no decoding cost: the spare alone
        (1, 100, 1, 2, Split(1, 1)),
    ],
)
def test_the_split_stays_within_bounds(
    cores: int, decode_ms: float, model_ms: float, most: int, expected: Split
) -> None:
    assert next_split(Split(3, 2), cores, costs(decode_ms, model_ms), most) == expected


def test_torch_keeps_every_core() -> None:
    assert [threads_for(2, w) for w in (1, 2, 3)] == [2, 2, 2]
    assert [threads_for(16, w) for w in (1, 4, 16)] == [16, 16, 16]


def test_nothing_changes_before_both_stages_are_measured() -> None:
    assert ideal_decode_cores(2, Costs(1.0, 10, 0.0, 0)) is None
    assert next_split(Split(1, 2), 2, Costs(0.0, 0, 1.0, 10), 4) == Split(1, 2)


def test_near_a_boundary_the_split_holds_either_way() -> None:
    """Ideal 4.1 of 16 cores (within MARGIN of 4): 4 + 1 workers stay 5, 5 + 1 stay 6."""
    near = costs(41, 119)  # 16 * 41 / 160 = 4.1
    assert next_split(Split(5, 16), 16, near, 32) == Split(5, 16)
    assert next_split(Split(6, 16), 16, near, 32) == Split(6, 16)


def test_noisy_equal_rates_do_not_oscillate() -> None:
    """Equal stage costs (ideal 2.0 cores of 4) measured with +-20% noise per batch over 200
    batches: the split changes at most once, then holds."""
    rng = np.random.default_rng(0)
    balance = Balance(Split(1, 4), cores=4, most_workers=8)
    seen = [balance.split]
    for _ in range(200):
        for _ in range(4):  # four chunks of 8 per batch of 32
            balance.decoded(8, 8 * 0.050 * rng.uniform(0.8, 1.2))
        seen.append(balance.embedded(32, 32 * 0.050 * rng.uniform(0.8, 1.2)))
    changes = sum(a != b for a, b in zip(seen, seen[1:], strict=False))
    assert changes <= 1, seen
    assert seen[-1] == Split(3, 4)


def test_the_balance_follows_a_change_of_regime() -> None:
    balance = Balance(Split(4, 12), cores=16, most_workers=32)
    for _ in range(3):
        balance.decoded(32, 32 * 0.045)
        balance.embedded(32, 32 * 0.028)
    assert balance.split == Split(11, 16)  # decode-bound
    for _ in range(10):
        balance.decoded(32, 32 * 0.045)
        balance.embedded(32, 32 * 0.170)
    assert balance.split == Split(5, 16)  # now model-bound: back


def test_the_first_batch_only_gives_decoding_more_cores_and_is_not_kept() -> None:
    """The first batch may hold the model's loading (seconds): its cost can only overstate
    the model, so it may grow the workers (here 45 vs 28 core-ms) but never shrink them."""
    grows = Balance(Split(4, 12), cores=16, most_workers=32)
    grows.decoded(32, 32 * 0.045)
    assert grows.embedded(32, 32 * 0.028) == Split(11, 16)
    loading = Balance(Split(11, 16), cores=16, most_workers=32)
    loading.decoded(32, 32 * 0.045)
    assert loading.embedded(32, 100.0) == Split(11, 16)  # would be 2 workers if it counted
    loading.decoded(32, 32 * 0.045)
    assert loading.embedded(32, 32 * 0.028) == Split(11, 16)  # the 100 s is forgotten


def test_explicit_workers_are_never_rebalanced() -> None:
    balance = for_run("cpu", workers=3)
    assert balance.fixed and balance.split.workers == 3
    for _ in range(5):
        balance.decoded(32, 32 * 1.0)
        assert balance.embedded(32, 32 * 0.001).workers == 3
    assert for_run("cuda", workers=None).fixed  # a GPU's model needs little CPU
    assert not for_run("cpu", workers=None).fixed
    assert for_run("cpu", workers=None).split == pipeline.plan_resources("cpu")  # the start


class Schedule:
    """A scripted `balance` for `decode_stream`: after each answer, the next target worker
    count; records how many worker processes were alive at each answer."""

    def __init__(self, targets: list[int]) -> None:
        self.targets = targets
        self.answers = 0
        self.alive: list[int] = []

    @property
    def workers(self) -> int:
        return self.targets[min(self.answers, len(self.targets) - 1)]

    def decoded(self, images: int, cpu_s: float) -> None:
        assert images >= 1 and cpu_s >= 0
        self.answers += 1
        self.alive.append(len(workers_of(os.getpid())))


def test_the_pool_grows_and_shrinks_mid_stream_keeping_order_and_crash_redo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 -> 3 -> 1 -> 2 workers while 60 files stream in chunks of 2, one of which kills its
    worker: every file comes back once, in order; only that one is recorded as crashed."""
    photos = make_photos(tmp_path, range(60), size=(64, 48))
    paths = [os.fsencode(p) for p in photos]
    monkeypatch.setenv("RETRIEVAL_TEST_CRASH_ON", "photo_9.")
    targets = [1] * 2 + [3] * 6 + [1] * 12 + [2]
    schedule = Schedule(targets)
    got = list(pipeline.decode_stream(paths, PREPROCESS, 100.0, 1, chunk_size=2, balance=schedule))
    assert [r.path for r in got] == paths
    assert [i for i, r in enumerate(got) if r.error] == [9]
    assert got[9].error == "the image decoder crashed on this file"
    assert max(schedule.alive) == 3
    grown = schedule.alive.index(3)
    assert 1 in schedule.alive[grown:]  # shrunk again
    assert schedule.alive[-1] == 2
    assert workers_of(os.getpid()) == []  # all stopped at the end


def test_a_crash_in_a_retiring_worker_is_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shrinking from 3 to 1 while a retiring worker holds the file that kills it."""
    photos = make_photos(tmp_path, range(24), size=(64, 48))
    paths = [os.fsencode(p) for p in photos]
    monkeypatch.setenv("RETRIEVAL_TEST_CRASH_ON", "photo_13.")
    schedule = Schedule([3] + [1] * 30)
    got = list(pipeline.decode_stream(paths, PREPROCESS, 100.0, 3, chunk_size=2, balance=schedule))
    assert [r.path for r in got] == paths
    assert [i for i, r in enumerate(got) if r.error] == [13]


def test_an_index_run_records_its_split(tmp_path: Path) -> None:
    """A balanced run embeds every file once and reports the split it ended with, torch's
    threads following it; an explicit --workers keeps the plan."""
    make_photos(tmp_path / "photos", range(20))
    index = Index(tmp_path / "index")
    report = index.add(
        [tmp_path / "photos"],
        model="test_resnet",
        weights=untrained(),
        options=IndexOptions(batch_size=4),
    )
    assert (report.added, report.failed) == (20, [])
    assert report.workers is not None and 1 <= report.workers <= pipeline.cpu_count()
    assert report.threads == threads_for(pipeline.cpu_count(), report.workers)  # torch's, now
    assert {"workers", "threads"} <= set(report.to_dict())
    make_photos(tmp_path / "more", range(20, 30))
    again = index.add([tmp_path / "more"], options=IndexOptions(batch_size=4, workers=1))
    assert (again.added, again.workers) == (10, 1)
    assert again.threads == pipeline.plan_resources("cpu", workers=1).threads  # as planned
