"""Decoding in worker processes, overlapped with inference, with bounded memory.

Files are decoded in chunks by worker processes (`workers.Pool`: fresh interpreters, so no
torch threads or open SQLite connections are carried across a fork, and the caller's script
is never re-run). At most `window` chunks are in flight, so memory stays flat however many
files there are; results come back in input order. The number of workers may change while a
stream runs (`balance`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from .. import defaults
from ..sources.decode import FileResult
from ..specs import Preprocess
from .workers import Pool, ReadRules, Request, decode_files

#: Files per task sent to a worker: large enough to amortise pickling, small for balance.
CHUNK = 8
#: Chunks in flight per worker: enough to keep workers busy through a whole batch's
#: inference, few enough that memory stays flat (~150 KB of pixels per image).
CHUNKS_PER_WORKER = 4
#: Images per forward pass and per transaction, by device: the CPU gains nothing beyond
#: ~32; a GPU needs hundreds to fill it (resnet50 bf16 on an H100: 8,600 img/s at 64,
#: 12,900 at 256).
BATCH_SIZE = {"cpu": defaults.BATCH_SIZE, "cuda": 256}
#: Most decode processes started by default (beyond it, IPC and the model are the limit).
MAX_WORKERS = 32
#: Most decode processes per CPU even when asked for more: each costs ~50 MB and a start-up,
#: and beyond the cores they only take turns.
WORKERS_PER_CPU = 2


@dataclass(frozen=True)
class Resources:
    """How the CPUs are shared: decode processes and torch's intra-op threads."""

    workers: int
    threads: int


def plan_resources(
    device: str, workers: int | None = None, threads: int | None = None
) -> Resources:
    """Default decode workers and torch threads for `device` on this machine.

    CPU: decoding takes about a quarter of the CPU time the model does (resnet50 fp32 on
    2-24 MP photos: ~45 core-ms against ~170 core-ms per image), so a quarter of the cores
    decode (at least one: a crashing decoder then takes down a worker, not the run) and the
    rest run the model. Below 4 cores the model keeps every core and the one worker shares
    them: measured on 2 cores, 1 worker + 2 threads indexes ~1.35x faster than 1 + 1, and
    within noise of decoding in-process between batches. CUDA: the model needs little CPU
    (normalisation runs on the GPU), so every core but one decodes. Explicit values win,
    workers up to `max_workers()`. On the CPU, indexing starts from this plan and then
    balances it to the stage costs it measures (`balance`), unless workers are given.
    """
    cpus = cpu_count()
    if device == "cuda":
        planned = Resources(workers=max(1, min(MAX_WORKERS, cpus - 1)), threads=min(2, cpus))
    else:
        decoders = max(1, min(MAX_WORKERS, cpus // 4))
        planned = Resources(workers=decoders, threads=cpus if cpus < 4 else cpus - decoders)
    return Resources(
        workers=planned.workers if workers is None else min(workers, max_workers()),
        threads=planned.threads if threads is None else max(1, threads),
    )


def max_workers() -> int:
    """Most decode processes this machine runs, however many are asked for."""
    return WORKERS_PER_CPU * cpu_count()


def workers_notice(workers: int | None) -> str | None:
    """The notice for a --workers value above `max_workers()`, else None."""
    if workers is None or workers <= max_workers():
        return None
    return f"--workers {workers} capped to {max_workers()}: this machine has {cpu_count()} CPUs"


def default_batch_size(device: str) -> int:
    return BATCH_SIZE.get(device, BATCH_SIZE["cpu"])


def cpu_count() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers() -> int:
    """Decode processes on the CPU device (see `plan_resources`)."""
    return plan_resources("cpu").workers


class Target(Protocol):
    """What sets the number of decode workers while a stream runs (`balance.Balance`)."""

    @property
    def workers(self) -> int: ...

    def decoded(self, images: int, cpu_s: float) -> None: ...


def decode_stream(
    paths: Sequence[bytes],
    preprocess: Preprocess,
    max_megapixels: float,
    workers: int,
    chunk_size: int = CHUNK,
    rules: ReadRules | None = None,
    balance: Target | None = None,
) -> Iterator[FileResult]:
    """Decode `paths` in order; `workers` = 0 decodes in this process.

    At most `workers * CHUNKS_PER_WORKER` chunks of `chunk_size` files are in flight, and
    no more workers start than there are chunks. With `balance`, the pool follows
    `balance.workers` between results (a worker leaving first answers what it holds) and
    each answer's decoding CPU time is reported to `balance.decoded`. A worker that dies (a
    decoder crashed it) is replaced and its chunk is redone one file at a time, so only the
    file that kills a worker on its own is recorded as crashed. Raises WorkersUnavailable
    when the worker processes cannot be started.
    """
    if workers <= 0:
        for path in paths:  # one at a time: lazily, as the batches need them
            yield from decode_files([path], preprocess, max_megapixels, rules)
        return
    if not paths:
        return
    chunks = -(-len(paths) // chunk_size)
    done: dict[int, FileResult] = {}
    retry: deque[Request] = deque()  # requests a dead worker left unanswered: sent first
    sent_until = next_out = 0
    with Pool() as pool:
        pool.start(min(workers, chunks))
        while next_out < len(paths):
            if balance is not None:
                _resize(pool, min(balance.workers, chunks))
            active = [w for w in pool.workers if not w.retiring]
            window = len(active) * CHUNKS_PER_WORKER * chunk_size  # sent but not yielded
            for worker in active:
                while len(worker.sent) < CHUNKS_PER_WORKER:
                    if retry:
                        request = retry.popleft()
                    elif sent_until < min(len(paths), next_out + window):
                        chunk = paths[sent_until : sent_until + chunk_size]
                        mine = _rules_for(chunk, rules)  # only the chunk's: pickled with it
                        request = Request(sent_until, chunk, preprocess, max_megapixels, mine)
                        sent_until += len(chunk)
                    else:
                        break
                    pool.send(worker, request)
            kind, worker, answer = pool.events.get()
            if kind == "result":
                assert answer is not None
                first = worker.sent.pop(0).first
                done.update(
                    zip(range(first, first + len(answer.results)), answer.results, strict=True)
                )
                if balance is not None:
                    balance.decoded(len(answer.results), answer.cpu_s)
            elif worker in pool.workers:  # it died: redo what it held
                retry.extendleft(reversed(_redo(worker.sent, done)))
                if worker.retiring:
                    pool.retire(worker)
                else:
                    pool.replace(worker)
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1


def _resize(pool: Pool, target: int) -> None:
    """Move `pool` toward `target` (>= 1) workers: keep those retiring when some are wanted
    back, else start new ones; mark the newest surplus ones retiring; stop those retiring
    that hold nothing. A worker that cannot start is not retried: the pool stays smaller."""
    active = [w for w in pool.workers if not w.retiring]
    for worker in [w for w in pool.workers if w.retiring][: max(0, target - len(active))]:
        worker.retiring = False
        active.append(worker)
    for worker in active[target:]:
        worker.retiring = True
    for _ in range(target - len(active)):
        try:
            pool.add()
        except OSError:  # e.g. out of file descriptors: carry on with those running
            break
    for worker in [w for w in pool.workers if w.retiring and not w.sent]:
        pool.retire(worker)


def _redo(lost: list[Request], done: dict[int, FileResult]) -> list[Request]:
    """What to send again after a worker died holding `lost` (oldest first): the request it
    was decoding one file at a time, or, when that was a single file, record it as crashed."""
    if not lost:
        return []
    suspect, rest = lost[0], lost[1:]
    if len(suspect.paths) == 1:
        done[suspect.first] = crashed(suspect.paths[0])
        return rest
    singles = [
        Request(
            suspect.first + i,
            [path],
            suspect.preprocess,
            suspect.max_megapixels,
            _rules_for([path], suspect.rules),
        )
        for i, path in enumerate(suspect.paths)
    ]
    return singles + rest


def _rules_for(paths: Sequence[bytes], rules: ReadRules | None) -> ReadRules | None:
    return {p: rules[p] for p in paths if p in rules} if rules else None


def crashed(path: bytes) -> FileResult:
    """The failure record of a file whose decoder killed its process."""
    return FileResult(path, 0, 0, None, error="the image decoder crashed on this file")
