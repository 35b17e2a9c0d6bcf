"""The Ray engine: the files an indexing run must embed, decoded and embedded on a Ray cluster.

The driver (`ops.indexing.index_paths`) scans, plans and commits as with the local engine;
this module only turns the plan's files into embedded batches. With Ray Data:

    from_items(paths + read rules) -> map_batches(decode, CPU tasks)
        -> map_batches(embed, an actor pool) -> iter_batches on the driver

Decoding is our own (`ops.workers.decode_files`, the code the local workers run), so a bad
file is a failure record in its batch, never a failed job (Ray's `read_images` aborts the
whole job on one bad file). Each actor loads the index's own model once
(`ops.embedders.load_for`: the manifest's weights, checked). Order is preserved, so a run
assigns the same ids as the local engine would. Ray is started on this machine unless an
address is given (asked for 127.0.0.1; on Linux Ray itself binds the machine's outward
address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set, as the tests do), and always
shut down (or, joined, disconnected), on errors and Ctrl-C too.

Ray starts in the background (`start`, called when the run begins, before the driver loads
the model, scans and plans): a thread of its own starts (or joins) it, warms Ray Data up
(its helper actors, our decoder's imports in the idle workers) and then waits for `close`
to shut it down. The same thread must stop Ray: Ray's processes die with the thread that
started them (Linux's parent-death signal is per thread).

Only this module imports ray.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import ray.data

from ..errors import UsageError
from ..ops import embedders, pipeline
from ..ops.layout import ShardWriter
from ..ops.workers import decode_files
from ..sources.decode import FileResult
from ..sources.scan import FileEntry
from ..specs import EngineOptions, Preprocess
from ..store.manifest import Manifest

if TYPE_CHECKING:  # not at run time: the catalogue and FAISS stay out of Ray's workers
    from ..ops.indexing import IndexOptions

Notify = Callable[[str], None]

#: Files per decode task: small, so the tasks spread over the cluster's CPUs.
DECODE_BATCH = 8
#: CPUs an embedding actor reserves on a CPU-only cluster: a fraction, so the decode tasks
#: still get CPUs (whole-CPU actors on 2 cores starve them and the job hangs).
ACTOR_CPUS = 0.5
#: CPUs a decode task reserves on a CPU-only cluster: with the actor's 0.5, two decode tasks run
#: beside the actor's torch threads on 2 CPUs, as the local engine's 2 workers do. 500 PNG-mix
#: files, resnet50 fp32, idle 2-CPU machine (tests/bench_ray.py): 1 CPU 45.3 s, 0.75 42.5-43.9 s,
#: 0.5 (three tasks) 53.5 s.
DECODE_CPUS = 0.75


@dataclass
class RayEngine:
    """`indexing.Engine` on Ray. `options.address`: None starts Ray on this machine, "auto"
    or "HOST:PORT" (a GCS address) joins a cluster; `options.actors`: embedding actors [one per GPU
    of the cluster, else 1]. `device` / `precision` are `Index.add`'s."""

    options: EngineOptions
    device: str
    precision: str
    notify: Notify
    _cluster: _Cluster | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Begin starting (or joining) Ray in the background; `close` ends it."""
        if self._cluster is None:
            self._cluster = _Cluster(self.options.address)

    def close(self) -> None:
        """Shut Ray down (a joined cluster: disconnect), waiting for it; idempotent."""
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()

    def shard_writer(self, manifest: Manifest, rows: int) -> ShardWriter | None:
        """With `options.shards`: a writer of that (new or empty) folder, for `rows` rows."""
        if self.options.shards is None:
            return None
        return ShardWriter(self.options.shards, manifest, expected_rows=rows)

    def embed_files(
        self, manifest: Manifest, todo: list[FileEntry], options: IndexOptions
    ) -> Generator[list[FileResult], None, None]:
        """Batches of `todo` in order, each file once: a decoded file's `pixels` holds its
        vector ((d,) float32, L2-normalised); a failure has no pixels and its error."""
        # Ray's driver prints what the cluster reports (a task retried after a node died:
        # "(raylet) Task ... failed") on sys.stdout, which holds `--json`'s data: to stderr.
        started_here = self._cluster is None  # else `start` was called and `close` will be
        with contextlib.redirect_stdout(sys.stderr):
            self.start()
            cluster = self._cluster
            assert cluster is not None
            try:
                cluster.wait()
                yield from self._batches(manifest, todo, options)
            finally:
                # Ray stops in the background while the run syncs its vectors; `close`
                # waits for it
                cluster.stop()
                if started_here:
                    self.close()

    def _batches(
        self, manifest: Manifest, todo: list[FileEntry], options: IndexOptions
    ) -> Iterator[list[FileResult]]:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        device = "cuda" if gpus and self.device in ("auto", "cuda") else "cpu"
        actors = self.options.actors or max(1, gpus if device == "cuda" else 1)
        batch_size = options.batch_size or pipeline.default_batch_size(device)
        preprocess = manifest.model.preprocess
        items = [
            {"path": e.path, "follow": e.link, "device": e.device, "inode": e.inode} for e in todo
        ]
        blocks = -(-len(items) // DECODE_BATCH)  # a decode task per block: spread, not one
        decode = functools.partial(
            _decode, preprocess=preprocess, max_megapixels=options.max_megapixels
        )
        decoded = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            decode,
            batch_size=DECODE_BATCH,
            batch_format="numpy",
            num_cpus=DECODE_CPUS if device == "cpu" else 1,
        )
        embedded = decoded.map_batches(
            _actor_class(manifest, device, self.precision),
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=actors,
            num_gpus=1 if device == "cuda" else 0,
            num_cpus=1 if device == "cuda" else ACTOR_CPUS,
        )
        nodes: dict[str, set[str]] = {"decode": set(), "embed": set()}
        for batch in embedded.iter_batches(batch_size=batch_size, batch_format="numpy"):
            nodes["decode"].update(batch["decode_node"].tolist())
            nodes["embed"].update(batch["embed_node"].tolist())
            yield _results(batch)
        self.notify(
            f"ray: decoded on {len(nodes['decode'])} node(s), embedded by {actors} "
            f"{device} actor(s) on {len(nodes['embed'])} node(s)"
        )


class _Cluster:
    """Ray, started (or joined) and warmed up by a thread that then waits for `close` and
    shuts it down (see the module docstring)."""

    def __init__(self, address: str | None) -> None:
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._sigterm = _exit_on_sigterm()
        # Joining starts nothing here, and Ray may retry an unreachable address for minutes:
        # `close` then leaves that thread behind (a daemon) rather than wait for it
        self._joining = address is not None
        self._thread = threading.Thread(
            target=self._run, args=(address,), name="ray", daemon=self._joining
        )
        self._thread.start()

    def _run(self, address: str | None) -> None:
        try:
            try:
                _start(address)
                if not self._stop.is_set():
                    _warm_up()
            except BaseException as exc:  # raised again in the caller's thread by `wait`
                self._error = exc
            self._ready.set()
            if self._error is None:
                self._stop.wait()
        finally:
            ray.shutdown()  # started or not, joined (a disconnect) or not
            self._ready.set()

    def wait(self) -> None:
        """Until Ray is up; raises what starting it raised."""
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Begin shutting Ray down (or disconnecting); returns at once."""
        self._stop.set()

    def close(self) -> None:
        """Shut Ray down and wait until it is (not for a join still connecting)."""
        self._stop.set()
        if not (self._joining and not self._ready.is_set()):
            self._thread.join()
        if self._sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._sigterm)


def _exit_on_sigterm() -> Any:
    """What `ray.init` does when called in the main thread (ours calls it in another):
    SIGTERM exits through SystemExit, so the `finally` blocks commit nothing half-done and
    shut Ray down. Returns the handler to put back, None outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.signal(signal.SIGTERM, _sigterm_exit)
    return signal.SIG_DFL if previous is None else previous


def _sigterm_exit(signum: int, frame: Any) -> None:
    sys.exit(signum)


def _warm_up() -> None:
    """A tiny Ray Data job: starts Ray Data's helper actors and imports our decoder in the
    idle workers (each ~1 s of a cold start), while the driver still scans and plans."""
    ray.data.range(pipeline.cpu_count(), override_num_blocks=pipeline.cpu_count()).map_batches(
        _warm, batch_format="numpy"
    ).materialize()


def _warm(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from ..sources import decode  # noqa: F401  (what `_decode` needs, imported now)

    return batch


def _start(address: str | None) -> None:
    """Join the cluster at `address`, or start Ray on this machine (see the module
    docstring for its address); Ray's own logs stay off stderr (its workers' output is not
    forwarded, its loggers are set to ERROR)."""
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the local engine's ids
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    common: dict[str, Any] = {
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "configure_logging": True,
    }
    if address:
        _join(address, common)
        return
    ray.init(
        address="local",  # a new Ray here, whatever RAY_ADDRESS says
        num_cpus=pipeline.cpu_count(),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        **common,
    )


def _join(address: str, common: dict[str, Any]) -> None:
    """`ray.init` at a cluster's address; UsageError when that fails, whatever Ray raised
    (ConnectionError, AuthenticationError, a timeout of the Ray Client, ...)."""
    try:
        ray.init(address=address, **common)
    except Exception as exc:  # noqa: BLE001 - every way of not joining is the same to a user
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(
            f"cannot join the Ray cluster at {address!r} ({reason}); check --ray-address, "
            "that this machine reaches the cluster, and that the environment has the "
            "cluster's authentication settings (RAY_AUTH_MODE, its token) if it uses them"
        ) from None


def _decode(
    batch: dict[str, np.ndarray], preprocess: Preprocess, max_megapixels: float
) -> dict[str, np.ndarray]:
    """A decode task: files -> pixels (n, height, width, 3) uint8, zeros for a failure, and
    each file's `FileResult` without pixels, pickled ("meta")."""
    paths = [bytes(p) for p in batch["path"]]
    rules = {
        path: (bool(follow), (int(dev), int(ino)) if ino else None)
        for path, follow, dev, ino in zip(
            paths, batch["follow"], batch["device"], batch["inode"], strict=True
        )
    }
    results = decode_files(paths, preprocess, max_megapixels, rules)
    pixels = np.zeros((len(results), preprocess.height, preprocess.width, 3), np.uint8)
    for i, result in enumerate(results):
        if result.pixels is not None:
            pixels[i] = result.pixels
    node = ray.get_runtime_context().get_node_id()
    return {
        "meta": np.array([pickle.dumps(replace(r, pixels=None)) for r in results], object),
        "ok": np.array([r.pixels is not None for r in results], bool),
        "pixels": pixels,
        "decode_node": np.array([node] * len(results), object),
    }


def _actor_class(manifest: Manifest, device: str, precision: str) -> type:
    """`_Embedder` for this model: its settings ride in the class (shipped with it), not as
    constructor arguments in the object store, which Ray warns a restarted actor may lose."""
    return type("Embedder", (_Embedder,), {"settings": (manifest, device, precision)})


class _Embedder:
    """An embedding actor: loads the index's model once, then embeds decoded batches."""

    settings: tuple[Manifest, str, str]  # set by `_actor_class`

    def __init__(self) -> None:
        self.model = embedders.load_for(*self.settings)
        embedders.configure_threads(self.model.device, None)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """(n, h, w, 3) pixels -> (n, d) vectors (zeros where decoding failed)."""
        ok = batch["ok"]
        vectors = np.zeros((len(ok), self.model.info.dim), np.float32)
        if ok.any():
            vectors[ok] = self.model.embed(batch["pixels"][ok])
        return {
            "meta": batch["meta"],
            "ok": ok,
            "vector": vectors,
            "decode_node": batch["decode_node"],
            "embed_node": np.array([self.node] * len(ok), object),
        }


def _results(batch: dict[str, np.ndarray]) -> list[FileResult]:
    """An embedded batch as `FileResult`s whose `pixels` hold the vectors."""
    out = []
    for meta, ok, vector in zip(batch["meta"], batch["ok"], batch["vector"], strict=True):
        result = pickle.loads(meta)
        out.append(replace(result, pixels=vector) if ok else result)
    return out
