"""The passes `retrieval bench` times beyond the product's own: the one-core decode whose
CPU time is the decode cost, the plain loop baseline, and `retrieval index` as a process.

Core-seconds: decoding runs on the calling thread (Pillow is single-threaded), so its cost is
that thread's CPU time (`time.thread_time`), untouched by torch's idle threads. The model's
cost is `getrusage(RUSAGE_SELF)`, the CPU time of every thread of this process, around the
model-only loop, run again on one torch thread for the limit (`model_1thread`): on several
threads, each spins at the barriers while a sibling waits for a core, so on a loaded machine
the figure counts waiting as work (see `bench._limit`). Threads x wall would count even more
of it: every moment a thread waited for a core that another process held.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import RetrievalError
from ..sources.baseline import plain_decode
from ..sources.decode import load_file
from ..specs import Preprocess
from . import bench_probes as probes
from .bench_report import Stage


def process_cpu_seconds() -> float:
    """User + system CPU seconds of every thread of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tree_cpu_seconds() -> float:
    """`process_cpu_seconds` plus the CPU seconds of the child processes (decode workers)
    that have ended and been waited for: around a stage that starts and stops its worker
    pool, the whole stage's CPU time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return process_cpu_seconds() + usage.ru_utime + usage.ru_stime


@contextmanager
def timed(stage: Stage, clock: Any = None) -> Iterator[None]:
    """Time one round of `stage` (wall), keep its peak RSS, and with `clock` (a function
    returning CPU seconds) also the core-seconds the round used."""
    probes.reset_peak_rss()
    rss_before = probes.current_rss()
    cpu_started = clock() if clock else 0.0
    started = time.perf_counter()
    yield
    stage.seconds.append(time.perf_counter() - started)
    if clock:
        stage.cpu_seconds.append(clock() - cpu_started)
    peak = probes.peak_rss()
    stage.peak_rss = max(stage.peak_rss, peak)
    stage.rss_growth = max(stage.rss_growth, peak - rss_before)


def model_pass(embedder: Any, pixels: np.ndarray, batch_size: int) -> None:
    """Embed (n, H, W, 3) uint8 `pixels` in batches of `batch_size`."""
    for start in range(0, len(pixels), batch_size):
        embedder.embed(pixels[start : start + batch_size])


@contextmanager
def one_torch_thread(threads: int) -> Iterator[None]:
    """Run torch on one intra-op thread inside, on `threads` again after."""
    from ..embedding.embedder import configure_threads

    configure_threads(1)
    try:
        yield
    finally:
        configure_threads(threads)


def decode_serial_pass(paths: Sequence[bytes], preprocess: Preprocess, cap: float) -> None:
    """Read + hash + decode + resize every file in this thread, as a decode worker does."""
    for path in paths:
        load_file(path, preprocess, cap, follow_symlinks=True)


def plain_pass(embedder: Any, paths: Sequence[bytes], batch_size: int) -> None:
    """The plain sequential loop: `plain_decode` each file, embed every full batch with the
    product's model (same precision, channels_last); no hashing, no database."""
    size = (embedder.preprocess.width, embedder.preprocess.height)
    batch: list[np.ndarray] = []
    for path in paths:
        pixels = plain_decode(path, size)
        if pixels is not None:
            batch.append(pixels)
        if len(batch) == batch_size:
            embedder.embed(np.stack(batch))
            batch = []
    if batch:
        embedder.embed(np.stack(batch))


def index_process(directory: str, roots: Sequence[str], settings: dict[str, Any]) -> None:
    """Run `retrieval index ROOTS` in a fresh interpreter into a new index at `directory`,
    with the bench's model, device, precision and batch size (and --workers when given),
    untrained weights; then delete the index. Raises RetrievalError when it fails."""
    command = [sys.executable, "-m", "retrieval", "index", *roots, "--index", directory]
    command += ["--model", settings["model"], "--no-pretrained", "-q", "--json"]
    command += ["--device", settings["device"], "--precision", settings["precision"]]
    command += ["--batch-size", str(settings["batch_size"])]
    command += ["--max-megapixels", str(settings["max_megapixels"])]
    if settings.get("workers_asked") is not None:
        command += ["--workers", str(settings["workers_asked"])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RetrievalError(f"the `retrieval index` process failed ({last}); run it alone")
