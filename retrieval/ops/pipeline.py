"""Decoding in worker processes, overlapped with inference, with bounded memory.

Files are decoded in chunks by a pool of spawned processes (spawn: no torch threads or open
SQLite connections are carried across a fork). At most `window` chunks are in flight, so
memory stays flat however many files there are; results come back in input order.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from ..sources.decode import FileResult, load_file
from ..specs import Preprocess

#: Files per task sent to a worker: large enough to amortise pickling, small for balance.
CHUNK = 8


def cpu_count() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers() -> int:
    """Decode processes: one core is left to the model on small machines, up to 16."""
    return max(1, min(16, cpu_count() - 1))


def decode_stream(
    paths: Sequence[bytes], preprocess: Preprocess, max_megapixels: float, workers: int
) -> Iterator[FileResult]:
    """Decode `paths` in order; `workers` = 0 decodes in this process."""
    if workers <= 0:
        for path in paths:
            yield load_file(path, preprocess, max_megapixels)
        return
    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    window = workers * 4
    pool = _new_pool(workers)
    pending: deque[tuple[Sequence[bytes], Future[list[FileResult]]]] = deque()
    try:
        next_chunk = 0
        while next_chunk < len(chunks) or pending:
            while next_chunk < len(chunks) and len(pending) < window:
                chunk = chunks[next_chunk]
                pending.append(
                    (chunk, pool.submit(_decode_chunk, chunk, preprocess, max_megapixels))
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
                pool, results = _isolate(chunk, preprocess, max_megapixels, workers)
            yield from results
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _isolate(
    chunk: Sequence[bytes], preprocess: Preprocess, max_megapixels: float, workers: int
) -> tuple[ProcessPoolExecutor, list[FileResult]]:
    pool = _new_pool(1)
    results = []
    for path in chunk:
        try:
            results.extend(pool.submit(_decode_chunk, [path], preprocess, max_megapixels).result())
        except BrokenProcessPool:
            results.append(_crashed(path))
            pool.shutdown(wait=False, cancel_futures=True)
            pool = _new_pool(1)
    pool.shutdown(wait=True)
    return _new_pool(workers), results


def _new_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker
    )


def _init_worker() -> None:
    # Ctrl-C is the parent's to handle: it stops submitting and keeps finished batches.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_chunk(
    paths: Sequence[bytes], preprocess: Preprocess, max_megapixels: float
) -> list[FileResult]:
    return [load_file(p, preprocess, max_megapixels) for p in paths]


def _crashed(path: bytes) -> FileResult:
    return FileResult(path, 0, 0, None, error="the image decoder crashed on this file")
