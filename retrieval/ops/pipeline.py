"""Decoding in worker processes, overlapped with inference, with bounded memory.

Files are decoded in chunks by a pool of spawned processes (spawn: no torch threads or open
SQLite connections are carried across a fork). At most `window` chunks are in flight, so
memory stays flat however many files there are; results come back in input order.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context

from .. import defaults
from ..sources.decode import FileResult, load_file
from ..specs import Preprocess

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
    (normalisation runs on the GPU), so every core but one decodes. Explicit values win.
    """
    cpus = cpu_count()
    if device == "cuda":
        planned = Resources(workers=max(1, min(MAX_WORKERS, cpus - 1)), threads=min(2, cpus))
    else:
        decoders = max(1, min(MAX_WORKERS, cpus // 4))
        planned = Resources(workers=decoders, threads=cpus if cpus < 4 else cpus - decoders)
    return Resources(
        workers=planned.workers if workers is None else workers,
        threads=planned.threads if threads is None else max(1, threads),
    )


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


#: Per path, what the reader checks (see `load_file`): (follow a symbolic link there, the
#: scan's (st_dev, st_ino) or None). A path not listed: no link followed, identity unknown.
ReadRules = Mapping[bytes, tuple[bool, tuple[int, int] | None]]


def decode_stream(
    paths: Sequence[bytes],
    preprocess: Preprocess,
    max_megapixels: float,
    workers: int,
    chunk_size: int = CHUNK,
    rules: ReadRules | None = None,
) -> Iterator[FileResult]:
    """Decode `paths` in order; `workers` = 0 decodes in this process.

    At most `workers * CHUNKS_PER_WORKER` chunks of `chunk_size` files are in flight.
    """
    if workers <= 0:
        for path in paths:  # one at a time: lazily, as the batches need them
            yield from _decode_chunk([path], preprocess, max_megapixels, rules)
        return
    chunks = [paths[i : i + chunk_size] for i in range(0, len(paths), chunk_size)]
    window = workers * CHUNKS_PER_WORKER
    pool = _new_pool(workers)
    pending: deque[tuple[Sequence[bytes], Future[list[FileResult]]]] = deque()
    try:
        next_chunk = 0
        while next_chunk < len(chunks) or pending:
            while next_chunk < len(chunks) and len(pending) < window:
                chunk = chunks[next_chunk]
                mine = _rules_for(chunk, rules)  # only the chunk's: pickled with every task
                pending.append(
                    (chunk, pool.submit(_decode_chunk, chunk, preprocess, max_megapixels, mine))
                )
                next_chunk += 1
            chunk, future = pending.popleft()
            try:
                results = future.result()
            except BrokenProcessPool:
                # A decoder crashed a worker: redo the unfinished chunks one file at a time,
                # so only the file that crashes on its own is marked as failed.
                chunks[next_chunk:next_chunk] = [c for c, _ in pending]
                pending.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool, results = _isolate(chunk, preprocess, max_megapixels, workers, rules)
            yield from results
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _isolate(
    chunk: Sequence[bytes],
    preprocess: Preprocess,
    max_megapixels: float,
    workers: int,
    rules: ReadRules | None,
) -> tuple[ProcessPoolExecutor, list[FileResult]]:
    pool = _new_pool(1)
    results = []
    for path in chunk:
        try:
            mine = _rules_for([path], rules)
            one = pool.submit(_decode_chunk, [path], preprocess, max_megapixels, mine)
            results.extend(one.result())
        except BrokenProcessPool:
            results.append(_crashed(path))
            pool.shutdown(wait=False, cancel_futures=True)
            pool = _new_pool(1)
    pool.shutdown(wait=True)
    return _new_pool(workers), results


def _rules_for(paths: Sequence[bytes], rules: ReadRules | None) -> ReadRules | None:
    return {p: rules[p] for p in paths if p in rules} if rules else None


def _new_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker
    )


def _init_worker() -> None:
    # Ctrl-C is the parent's to handle: it stops submitting and keeps finished batches.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_chunk(
    paths: Sequence[bytes],
    preprocess: Preprocess,
    max_megapixels: float,
    rules: ReadRules | None = None,
) -> list[FileResult]:
    results = []
    for path in paths:
        follow, identity = rules.get(path, (False, None)) if rules else (False, None)
        results.append(
            load_file(path, preprocess, max_megapixels, follow_symlinks=follow, identity=identity)
        )
    return results


def _crashed(path: bytes) -> FileResult:
    return FileResult(path, 0, 0, None, error="the image decoder crashed on this file")
