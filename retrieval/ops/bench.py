"""`retrieval bench`: how fast each stage of indexing runs on this machine, side by side.

Stages, each timed in every round (rounds interleave the stages, so background load hits
them alike; figures are medians over rounds):

* decode: read + hash + decode + resize every file through the worker pool (`decode_stream`)
* decode_serial: the same in this process on one core; its CPU time is the decode cost
* model: `Embedder.embed` on already-decoded pixels, in batches; its CPU time (all torch
  threads) is the model cost
* end_to_end: `index_paths` into a fresh temporary index: scan, decode, embed, store, FAISS
* plain: the plain sequential loop of issue 12 (`bench_stages.plain_pass`), no storage
* index_process: `retrieval index` as a new process on the same files, start-up included,
  to set beside `plain`
* search: one query image against a synthetic index of `search_size` vectors, model loaded
* decode_gpu (CUDA only): the JPEGs read here and decoded in batches by nvJPEG, to compare
  with 'decode' (untested on real hardware so far: no GPU was at hand when it was written)

The headline is end_to_end as a share of the machine's overlap limit (`bench_report.Limit`):
cores / (decode + model core-seconds per image); `bench_stages` says how each is measured.

Peak RSS is this process's high-water mark during each stage (reset between stages where
Linux allows), plus the largest of the decode workers. The model runs untrained weights:
speed does not depend on the weights, and the bench needs no download.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import defaults
from ..errors import BadImage, UsageError
from ..sources import synthetic
from ..sources.baseline import naive_decode
from ..sources.decode import decode_image, read_file
from ..sources.scan import scan
from ..specs import Preprocess
from ..store.index_dir import IndexDir
from ..store.manifest import Manifest
from . import bench_probes as probes
from . import bench_stages as passes
from . import pipeline
from .bench_report import BenchReport, Limit, Stage, overlap_limit
from .bench_search import search_latency
from .indexing import IndexOptions, index_paths

Notify = Callable[[str], None]

#: Batches of decoded pixels the model stage runs per round (at least 64 images).
MODEL_BATCHES = 4


@dataclass(frozen=True)
class BenchOptions:
    """What to measure. None means the product's default for this machine and device."""

    model: str = defaults.MODEL
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    workers: int | None = None
    threads: int | None = None
    images: int = defaults.BENCH_IMAGES  # generated (no folder), else the most files used
    mix: str = defaults.BENCH_MIXES[0]  # 'photos' (2-24 MP JPEG + PNG), 'png' or 'small'
    rounds: int = defaults.BENCH_ROUNDS
    plain: bool = True  # the plain loop and `retrieval index` as a process, side by side
    search_size: int = defaults.BENCH_SEARCH_SIZE  # synthetic search index; 0: no search
    max_megapixels: float = defaults.MAX_MEGAPIXELS


def run_bench(
    folder: str | os.PathLike[str] | None,
    options: BenchOptions = BenchOptions(),
    notify: Notify | None = None,
) -> BenchReport:
    """Measure every stage's throughput and cost, and the overlap limit; see module doc."""
    from ..embedding.backbone import untrained
    from ..embedding.embedder import configure_threads, describe_hardware, load_embedder

    say = notify or (lambda message: None)
    _check(options)
    embedder = load_embedder(options.model, untrained(), options.device, options.precision)
    plan = pipeline.plan_resources(embedder.device, options.workers, options.threads)
    configure_threads(plan.threads)
    batch_size = options.batch_size or pipeline.default_batch_size(embedder.device)
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as scratch:
        if folder is None:
            say(f"making {options.images} {options.mix} images in {scratch}")
            images = os.path.join(scratch, "images")
            synthetic.make_images(images, options.images, options.mix)
            roots, source = [images], f"generated, mix {options.mix}"
        else:
            roots, source = [os.fspath(folder)], os.fspath(folder)
        paths = _files(roots, options.images if folder is not None else None)
        if not paths:
            raise UsageError(f"no images found under {source}; point bench at a folder of images")
        if folder is not None and len(paths) < _count_files(roots):
            roots = [os.fsdecode(p) for p in paths]  # index exactly the files measured
        run = _Run(embedder, paths, roots, scratch, options, batch_size, plan.workers, say)
        run.threads = plan.threads
        say(
            f"{len(paths)} files; {options.model} on {embedder.describe()}, batch {batch_size}, "
            f"{plan.workers} workers, {plan.threads} threads, {options.rounds} rounds"
        )
        corpus = {"source": source, "files": len(paths), **probes.megapixels_summary(paths)}
        corpus["largest_jpeg_ms"] = _draft_effect(paths, embedder.preprocess)
        stages = _measure_stages(run)
        search = {}
        if options.search_size:
            say(f"search: building a {options.search_size}-vector index")
            cap = options.max_megapixels
            search = search_latency(embedder, paths, scratch, options.search_size, cap)
    settings = {
        "model": options.model,
        "device": embedder.device,
        "precision": embedder.precision,
        "batch_size": batch_size,
        "workers": plan.workers,
        "threads": plan.threads,
        "rounds": options.rounds,
    }
    machine = {**probes.machine_facts(), **describe_hardware(embedder.device)}
    limit = _limit(stages, embedder.device)
    return BenchReport(machine, settings, corpus, stages, search, run.workers_peak.peak, limit)


def _limit(stages: dict[str, Stage], device: str) -> Limit:
    """The overlap limit from the measured decode and model costs on this machine's CPUs.

    The model's cost is its CPU time on one torch thread where that was measured (CPU):
    with several, threads spin at each barrier while a sibling waits for a core, which on a
    loaded machine doubled the figure (resnet50 bf16 on 2 shared cores: 66 core-ms per
    image on 2 threads, 32 on 1, measured in one run); the 1-thread figure is the work.
    """
    decode = stages["decode_serial"].core_seconds_per_image or 0.0
    model_stage = stages.get("model_1thread") or stages["model"]
    model = model_stage.core_seconds_per_image or 0.0
    return overlap_limit(
        pipeline.cpu_count(), decode, model, device, stages["model"].images_per_second
    )


def _check(options: BenchOptions) -> None:
    if options.rounds < 1:
        raise UsageError(f"--rounds must be at least 1, not {options.rounds}")
    if options.images < 1:
        raise UsageError(f"--images must be at least 1, not {options.images}")
    if options.mix not in synthetic.MIXES:
        raise UsageError(f"unknown mix {options.mix!r}; use one of {', '.join(synthetic.MIXES)}")


@dataclass
class _Run:
    """What every stage of one bench run shares."""

    embedder: Any
    paths: list[bytes]
    roots: list[str]
    scratch: str
    options: BenchOptions
    batch_size: int
    workers: int
    say: Notify
    workers_peak: probes.WorkerPeak = field(default_factory=lambda: probes.WorkerPeak())
    threads: int = 1


def _measure_stages(run: _Run) -> dict[str, Stage]:
    embedder, paths, workers = run.embedder, run.paths, run.workers
    preprocess, cap, batch_size = embedder.preprocess, run.options.max_megapixels, run.batch_size
    model_input = _model_input(run)
    embedder.embed(model_input[:batch_size])  # warm-up: kernels chosen, memory allocated
    names = ["decode", "decode_serial", "model", "end_to_end"]
    names += ["model_1thread"] if embedder.device == "cpu" else []
    names += ["plain", "index_process"] if run.options.plain else []
    stages = {n: Stage(n, len(model_input if n.startswith("model") else paths)) for n in names}
    gpu_jpegs = []
    if embedder.device == "cuda":  # is nvJPEG faster than the worker processes?
        gpu_jpegs = [p for p in paths if p.lower().endswith((b".jpg", b".jpeg"))]
        if gpu_jpegs:
            _gpu_decode_pass(gpu_jpegs[:batch_size], preprocess, batch_size)  # warm-up
            stages["decode_gpu"] = Stage("decode_gpu", len(gpu_jpegs))
    # end to end as `retrieval index` runs: balanced unless --workers was given
    index_options = IndexOptions(
        max_megapixels=cap, batch_size=batch_size, workers=run.options.workers
    )
    for round_ in range(run.options.rounds):
        run.say(f"round {round_ + 1} of {run.options.rounds}")
        with passes.timed(stages["decode"]):
            for _ in pipeline.decode_stream(paths, preprocess, cap, workers):
                run.workers_peak.poll()
        with passes.timed(stages["decode_serial"], time.thread_time):
            passes.decode_serial_pass(paths, preprocess, cap)
        with passes.timed(stages["model"], passes.process_cpu_seconds):
            passes.model_pass(embedder, model_input, batch_size)
        if "model_1thread" in stages:
            with passes.one_torch_thread(run.threads):
                with passes.timed(stages["model_1thread"], passes.process_cpu_seconds):
                    passes.model_pass(embedder, model_input, batch_size)
        with passes.timed(stages["end_to_end"], passes.tree_cpu_seconds):
            _index_once(run, os.path.join(run.scratch, f"index-{round_}"), index_options)
        if run.options.plain:
            with passes.timed(stages["plain"]):
                passes.plain_pass(embedder, paths, batch_size)
            with passes.timed(stages["index_process"]):
                directory = os.path.join(run.scratch, f"process-{round_}")
                passes.index_process(directory, run.roots, _process_settings(run))
        if gpu_jpegs:
            with passes.timed(stages["decode_gpu"]):
                _gpu_decode_pass(gpu_jpegs, preprocess, batch_size)
    return stages


def _process_settings(run: _Run) -> dict[str, Any]:
    embedder, options = run.embedder, run.options
    return {
        "model": options.model,
        "device": embedder.device,
        "precision": embedder.precision,
        "batch_size": run.batch_size,
        "max_megapixels": options.max_megapixels,
        "workers_asked": options.workers,
    }


def _model_input(run: _Run) -> np.ndarray:
    """Decoded pixels for the model stage, from an untimed pass that also warms the page
    cache. A few batches, not every image: holding them all would make this process's
    memory grow with the folder and blur the end-to-end peak RSS."""
    preprocess, batch_size = run.embedder.preprocess, run.batch_size
    keep = max(MODEL_BATCHES * batch_size, 64)
    decoded: list[np.ndarray] = []
    stream = pipeline.decode_stream(run.paths, preprocess, run.options.max_megapixels, run.workers)
    for result in stream:
        if result.pixels is not None and len(decoded) < keep:
            decoded.append(result.pixels)
    if not decoded:
        raise UsageError("none of the files could be decoded; point bench at a folder of images")
    return _fill(np.stack(decoded), max(len(decoded), batch_size))


def _index_once(run: _Run, directory: str, options: IndexOptions) -> None:
    """`index_paths` into a new index at `directory`, then delete it."""
    embedder = run.embedder
    with IndexDir.open_writer(directory) as index_dir:
        index_dir.set_manifest(Manifest(model=embedder.info, precision=embedder.precision))
        index_paths(index_dir, embedder, run.roots, options, run.workers_peak.poll)
    shutil.rmtree(directory, ignore_errors=True)


def _gpu_decode_pass(paths: Sequence[bytes], preprocess: Preprocess, batch_size: int) -> None:
    """Read JPEGs in this process and decode them in batches with nvJPEG."""
    from ..embedding.jpeg_gpu import decode_jpegs

    for start in range(0, len(paths), batch_size):
        datas = [read_file(p)[0] for p in paths[start : start + batch_size]]
        decode_jpegs(datas, preprocess, "cuda").cpu()  # .cpu(): wait for the GPU


def _draft_effect(paths: Sequence[bytes], preprocess: Preprocess) -> dict[str, float]:
    """Milliseconds to decode the largest JPEG with JPEG draft (DCT scaling) and without.

    Empty when there is no JPEG. Both include the resize and crop; medians of 3.
    """
    jpegs = [p for p in paths if p.lower().endswith((b".jpg", b".jpeg"))]
    if not jpegs:
        return {}
    largest = max(jpegs, key=probes.file_size)
    data = read_file(largest)[0]

    def median_ms(decode: Callable[[], object]) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            decode()
            times.append((time.perf_counter() - started) * 1000)
        return round(statistics.median(times), 1)

    try:
        with_draft = median_ms(lambda: decode_image(data, preprocess))
    except BadImage:
        return {}
    return {
        "megapixels": probes.megapixels_summary([largest])["megapixels_mean"],
        "draft": with_draft,
        "full": median_ms(lambda: naive_decode(largest, preprocess)),
    }


# -- files, memory, machine ------------------------------------------------------------------


def _files(roots: list[str], limit: int | None) -> list[bytes]:
    found = sorted(entry.path for entry in scan(roots).files)
    return found[:limit] if limit is not None else found


def _count_files(roots: list[str]) -> int:
    return len(scan(roots).files)


def _fill(pixels: np.ndarray, count: int) -> np.ndarray:
    """`pixels` repeated up to `count` images."""
    reps = -(-count // len(pixels))
    return np.concatenate([pixels] * reps)[:count] if reps > 1 else pixels
