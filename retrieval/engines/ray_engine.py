"""The Ray engine: the files an indexing run must embed, decoded and embedded on a Ray cluster.

The driver (`ops.indexing.index_paths`) scans, plans and commits as with the local engine;
this module only turns the plan's files into embedded batches, with Ray's core API:

    decode tasks (`DECODE_BATCH` files each, spread over the cluster's CPUs)
        -> an embedding actor's `embed(*decoded)`: one call per batch, to the least busy actor
        -> `ray.get` on the driver, in submission order

A bounded window of batches is in flight (enough to keep the cluster's CPUs decoding ahead of
the actors), so the plan streams through Ray and memory stays flat however many files there
are. Decoding is our own (`ops.workers.decode_files`, the code the local workers run), so a
bad file is a failure record in its batch, never a failed job (Ray's `read_images` aborts the
whole job on one bad file). Results come back in order, so a run assigns the same ids as the
local engine would. When a node dies, Ray retries its decode tasks (and rebuilds their lost
outputs), restarts its actors elsewhere and re-sends their calls (`ACTOR_RESTARTS`): the
driver still commits each file exactly once.

The actors are created as soon as Ray is up, so they load the model while the driver scans
and plans, and a new index's model is described by them (`RayEngine.model`): the driver never
loads torch. (Ray Data's `map_batches` with an actor pool did this job first; on one 2-CPU
machine its three helper actors, its executor and its actors' late start made a run 1.27x
the local engine's wall time on 500 images, tests/bench_ray.py.)

Ray is started on this machine unless an address is given (asked for 127.0.0.1; on Linux Ray
itself binds the machine's outward address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set,
as the tests do), and always shut down (or, joined, disconnected), on errors and Ctrl-C too.
A thread of its own starts (or joins) Ray, creates the actors, warms the decode workers up and
then waits for `close` to shut Ray down. The same thread must stop Ray: Ray's processes die
with the thread that started them (Linux's parent-death signal is per thread).

Only this module imports ray.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import signal
import socket
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import ray

from ..errors import EngineFailed, IndexIncompatible, ModelError, RetrievalError, UsageError
from ..ops import embedders, pipeline
from ..ops.layout import ShardWriter
from ..ops.workers import decode_files
from ..sources.decode import FileResult
from ..sources.scan import FileEntry
from ..specs import EngineOptions, Preprocess
from ..store.files import fault_point
from ..store.manifest import Manifest

if TYPE_CHECKING:  # not at run time: the catalogue and FAISS stay out of Ray's workers
    from ..ops.indexing import EngineModel, IndexOptions, ModelRequest

Notify = Callable[[str], None]
#: A file as a decode task gets it: (path, follow a link there, the scan's st_dev, st_ino).
_Item = tuple[bytes, bool, int, int]
#: A decode task's output: its files' results without pixels, their pixels (n, h, w, 3)
#: uint8 (zeros for a failure), the id of the node that decoded them.
_Decoded = tuple[list[FileResult], np.ndarray, str]

#: Files per decode task: small, so the tasks spread over the cluster's CPUs.
DECODE_BATCH = 8
#: CPUs an embedding actor reserves on a CPU-only cluster: a fraction, so the decode tasks
#: still get CPUs (whole-CPU actors on 2 cores starve them).
ACTOR_CPUS = 0.5
#: CPUs a decode task reserves on a CPU-only cluster: with the actor's 0.5, two decode tasks run
#: beside the actor's torch threads on 2 CPUs, as the local engine's 2 workers do.
DECODE_CPUS = 0.75
#: Times an actor is restarted (on another node when its node died) before the run fails;
#: its pending calls are re-sent each time.
ACTOR_RESTARTS = 4
#: The fewest CPUs the actors must leave the decode tasks (below it, decoding would crawl).
MIN_DECODE_CPUS = 0.25
#: The most decode workers started ahead of the run (each is a process: ~1 s of CPU).
MAX_WARM = 64


@dataclass
class RayEngine:
    """`indexing.Engine` on Ray. `options.address`: None starts Ray on this machine, "auto",
    "HOST:PORT" (a GCS address) or "ray://HOST:PORT" (a Ray Client server) joins a cluster;
    `options.actors`: embedding actors [one per GPU of the cluster, else 1]. `device` /
    `precision` are `Index.add`'s."""

    options: EngineOptions
    device: str
    precision: str
    notify: Notify
    _cluster: _Cluster | None = field(default=None, init=False, repr=False)
    _stdout: contextlib.ExitStack = field(
        default_factory=contextlib.ExitStack, init=False, repr=False
    )
    _announced: bool = field(default=False, init=False, repr=False)  # "embedding with" said

    def start(self, model: ModelRequest) -> None:
        """Begin starting (or joining) Ray and loading `model` on its actors, in the
        background; `close` ends it."""
        if self._cluster is None:
            # Ray's driver prints what the cluster reports (a task retried after a node
            # died: "(raylet) Task ... failed") on sys.stdout, which holds `--json`'s data:
            # to stderr while Ray runs
            self._stdout.enter_context(contextlib.redirect_stdout(sys.stderr))
            launch = _Launch(model, self.device, self.precision, self.options.actors)
            try:
                self._cluster = _Cluster(self.options.address, launch)
            except BaseException:
                self._stdout.close()
                raise

    def model(self) -> EngineModel:
        """The model the actors loaded, as a new index's manifest records it (waits for Ray
        and for every actor, and says what runs where); raises what loading it raised."""
        from ..ops.indexing import EngineModel  # the driver's side: the catalogue is loaded

        if self._cluster is None:
            raise RuntimeError("RayEngine.model() before start()")
        fleet = self._cluster.fleet()
        info, precision = fleet.describe()[0]  # every actor's, checked alike by `check`
        self._announce(fleet)
        return EngineModel(info, precision)

    def _announce(self, fleet: _Fleet) -> None:
        """Say once which model runs where, as the local engine does when it loads one."""
        if not self._announced:
            info, precision = fleet.describe()[0]
            self.notify(f"embedding with {info.name} on {fleet.where()}, {precision}")
            self._announced = True

    def close(self) -> None:
        """Shut Ray down (a joined cluster: disconnect), waiting for it; idempotent."""
        cluster, self._cluster = self._cluster, None
        try:
            if cluster is not None:
                cluster.close()
        finally:
            self._stdout.close()

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
        from ..ops.indexing import ModelRequest

        started_here = self._cluster is None  # else `start` was called and `close` will be
        self.start(ModelRequest(manifest.model.name, manifest.model.weights, manifest))
        cluster = self._cluster
        assert cluster is not None
        try:
            fleet = cluster.fleet()
            fleet.check(manifest)
            self._announce(fleet)  # an existing index's model was not described
            yield from _Run(fleet, todo, manifest.model.preprocess, options).batches()
            self.notify(fleet.summary())
        finally:
            # Ray stops in the background while the run syncs its vectors; `close` waits
            cluster.stop()
            if started_here:
                self.close()


@dataclass(frozen=True)
class _Launch:
    """What the Ray thread creates once Ray is up: `_Fleet.create`'s arguments."""

    model: ModelRequest
    device: str
    precision: str
    actors: int | None

    def __call__(self) -> _Fleet:
        return _Fleet.create(self)


@dataclass
class _Fleet:
    """The embedding actors of a run (created as Ray starts) and where they run."""

    actors: list[Any]
    device: str  # "cuda" (one GPU an actor) or "cpu"
    cpus: float  # the cluster's, as the run began
    decode_cpus: float  # what a decode task reserves
    decoders: int  # decode workers warmed up as the actors load (those that run at once)
    #: warm-up tasks in flight (kept so that they run; their results are never read)
    warming: list[Any] = field(default_factory=list)
    decode_nodes: set[str] = field(default_factory=set)
    embed_nodes: set[str] = field(default_factory=set)
    _described: list[tuple[Any, str]] | None = None  # `describe`'s answer, once had

    @classmethod
    def create(cls, launch: _Launch) -> _Fleet:
        """Actors for `launch.model`: `launch.actors` of them [one per GPU of the cluster,
        else 1], each on a GPU when the cluster has them and `launch.device` allows."""
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 0))
        if launch.device == "cuda" and not gpus:
            raise UsageError("--device cuda: the Ray cluster has no GPU; use --device auto or cpu")
        device = "cuda" if gpus and launch.device in ("auto", "cuda") else "cpu"
        count = launch.actors or max(1, gpus if device == "cuda" else 1)
        decode_cpus = _decode_cpus(count, device, gpus, cpus)
        actor = ray.remote(_Embedder).options(
            num_cpus=_actor_cpus(device),
            num_gpus=1 if device == "cuda" else 0,
            max_restarts=ACTOR_RESTARTS,
            max_task_retries=-1,  # while the actor can restart, its calls are re-sent
        )
        actors = [actor.remote(launch.model, device, launch.precision) for _ in range(count)]
        decoders = min(MAX_WARM, math.floor((cpus - count * _actor_cpus(device)) / decode_cpus))
        return cls(actors, device, cpus, decode_cpus, decoders)

    def where(self) -> str:
        """Where the model runs, for the user: "ray (2 cuda actors)"."""
        return f"ray ({len(self.actors)} {self.device} actor{'s' * (len(self.actors) > 1)})"

    def warm_up(self) -> None:
        """Start the decode workers (a worker's first task pays for its process and our
        decoder's imports, ~1 s) while the actors load the model: not waited for."""
        task = ray.remote(_warm).options(num_cpus=self.decode_cpus, scheduling_strategy="SPREAD")
        self.warming = [task.remote() for _ in range(max(1, self.decoders))]

    def describe(self) -> list[tuple[Any, str]]:
        """(ModelInfo, precision) of each actor (waits for them to load); raises what
        loading the model raised (one line), EngineFailed when an actor died."""
        if self._described is None:
            answers = _get([actor.describe.remote() for actor in self.actors], "loading the model")
            for answer in answers:
                if isinstance(answer, RetrievalError):
                    raise answer
            self._described = answers
        return self._described

    def check(self, manifest: Manifest) -> None:
        """Every actor loaded the weights `manifest` records (the same file or cache on
        every node) and runs at one precision."""
        recorded = manifest.model.weights
        described = self.describe()
        for info, _ in described:
            if info.weights.identity != recorded.identity:
                raise IndexIncompatible(
                    f"a Ray actor loaded {info.weights.source} weights {info.weights.identity}, "
                    f"but the index records {recorded.identity}; give every node of the "
                    "cluster the same weights (the same file, or the same cache)"
                )
        precisions = sorted({precision for _, precision in described})
        if len(precisions) > 1:
            raise UsageError(
                f"the Ray actors resolved --precision to {' and '.join(precisions)} on "
                "different nodes; give --precision (fp32 runs everywhere)"
            )

    def summary(self) -> str:
        return (
            f"ray: decoded on {len(self.decode_nodes)} node(s), embedded by "
            f"{len(self.actors)} {self.device} actor(s) on {len(self.embed_nodes)} node(s)"
        )


@dataclass
class _Batch:
    """A batch in flight: its decode tasks (with their files) and its actor call."""

    parts: list[Any]
    items: list[list[_Item]]
    call: Any


@dataclass
class _Run:
    """One run's batches through the fleet: decode tasks and actor calls, a window of
    them in flight, results taken in submission order."""

    fleet: _Fleet
    todo: list[FileEntry]
    preprocess: Preprocess
    options: IndexOptions

    def __post_init__(self) -> None:
        task = ray.remote(_decode)
        self.decode = task.options(num_cpus=self.fleet.decode_cpus, scheduling_strategy="SPREAD")
        # a file of a crashed task, alone: not retried (it would kill a worker each time)
        self.decode_once = task.options(num_cpus=self.fleet.decode_cpus, max_retries=0)
        self.busy = [0] * len(self.fleet.actors)  # unfinished calls per actor
        self.running: dict[Any, int] = {}  # unfinished call -> its actor
        self.machine = _machine()

    def batches(self) -> Iterator[list[FileResult]]:
        size = self.options.batch_size or pipeline.default_batch_size(self.fleet.device)
        pending: collections.deque[_Batch] = collections.deque()
        window = self.window(size)
        for start in range(0, len(self.todo), size):
            chunk = self.todo[start : start + size]
            items = [
                _items(chunk[i : i + DECODE_BATCH]) for i in range(0, len(chunk), DECODE_BATCH)
            ]
            parts = [self.decode.remote(part, *self.decode_args()) for part in items]
            pending.append(self.embed(parts, items))
            while len(pending) >= window:
                yield self.take(pending.popleft())
        while pending:
            yield self.take(pending.popleft())

    def decode_args(self) -> tuple[Preprocess, float, str]:
        return self.preprocess, self.options.max_megapixels, self.machine

    def window(self, size: int) -> int:
        """Batches in flight: enough for every CPU of the cluster to have a decode task
        (with the actors' own), and two per actor."""
        decoding = math.ceil(self.fleet.cpus / self.fleet.decode_cpus * DECODE_BATCH / size)
        return max(2 * len(self.fleet.actors), decoding + len(self.fleet.actors)) + 2

    def embed(self, parts: list[Any], items: list[list[_Item]]) -> _Batch:
        """Send a batch to the actor with the fewest unfinished calls (finished ones are
        counted off as they finish, not as they are taken in order)."""
        if self.running:
            done, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
            for call in done:
                self.finished(call)
        actor = self.busy.index(min(self.busy))
        call = self.fleet.actors[actor].embed.remote(*parts)
        self.busy[actor] += 1
        self.running[call] = actor
        return _Batch(parts, items, call)

    def finished(self, call: Any) -> None:
        """Count `call` off its actor's unfinished calls (once, however often told)."""
        actor = self.running.pop(call, None)
        if actor is not None:
            self.busy[actor] -= 1

    def take(self, batch: _Batch) -> list[FileResult]:
        """`batch` embedded (waits for it). A decode task that failed for good (its worker
        killed by a decoder crash on every try) is redone one file a task, and the file
        whose task still dies is recorded as crashed, as the local engine does."""
        try:
            results, decode_nodes, embed_node = _get(batch.call)
        except EngineFailed:
            repaired = self.repaired(batch)
            if repaired is None:
                raise
            results, decode_nodes, embed_node = _get(repaired.call)
            batch = repaired
        self.finished(batch.call)
        self.fleet.decode_nodes.update(decode_nodes)
        self.fleet.embed_nodes.add(embed_node)
        return results

    def repaired(self, batch: _Batch) -> _Batch | None:
        """`batch` sent again with its failed decode tasks redone file by file; None when
        none of them failed (the actor call itself failed)."""
        parts, broken = [], False
        for part, items in zip(batch.parts, batch.items, strict=True):
            try:
                ray.get(part)
                parts.append(part)
            except ray.exceptions.RayError:
                broken = True
                parts.append(ray.put(self.one_by_one(items)))
        if not broken:
            return None
        self.finished(batch.call)
        return self.embed(parts, batch.items)

    def one_by_one(self, items: list[_Item]) -> _Decoded:
        """`items` decoded in a task each, not retried: a file whose task dies is crashed."""
        results, pixels, nodes = [], [], set()
        tasks = [self.decode_once.remote([item], *self.decode_args()) for item in items]
        for item, task in zip(items, tasks, strict=True):
            try:
                [result], one, node = ray.get(task)
                nodes.add(node)
            except ray.exceptions.RayError:
                result = pipeline.crashed(item[0])
                one = np.zeros((1, self.preprocess.height, self.preprocess.width, 3), np.uint8)
            results.append(result)
            pixels.append(one)
        return results, np.concatenate(pixels), next(iter(nodes), "")


class _Cluster:
    """Ray, started (or joined), with a run's actors created, by a thread that then waits
    for `close` and shuts Ray down (see the module docstring)."""

    def __init__(self, address: str | None, launch: Callable[[], _Fleet]) -> None:
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._fleet: _Fleet | None = None
        self._sigterm = _exit_on_sigterm()
        # Joining starts nothing here, and Ray may retry an unreachable address for minutes:
        # `close` then leaves that thread behind (a daemon) rather than wait for it
        self._joining = address is not None
        self._thread = threading.Thread(
            target=self._run, args=(address, launch), name="ray", daemon=self._joining
        )
        self._thread.start()

    def _run(self, address: str | None, launch: Callable[[], _Fleet]) -> None:
        try:
            try:
                _start(address)
                if not self._stop.is_set():
                    self._fleet = launch()
                    self._fleet.warm_up()
            except BaseException as exc:  # raised again in the caller's thread by `fleet`
                self._error = exc
            self._ready.set()
            if self._error is None:
                self._stop.wait()
        finally:
            ray.shutdown()  # started or not, joined (a disconnect) or not
            self._ready.set()

    def fleet(self) -> _Fleet:
        """The run's actors once Ray is up (they may still be loading the model); raises
        what starting Ray raised."""
        self._ready.wait()
        if self._error is not None:
            raise self._error
        if self._fleet is None:
            raise EngineFailed("Ray was shut down before the run began")
        return self._fleet

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


def _start(address: str | None) -> None:
    """Join the cluster at `address`, or start Ray on this machine (see the module
    docstring for its address); Ray's own logs stay off stderr (its workers' output is not
    forwarded, its loggers are set to ERROR)."""
    logging.getLogger("ray").setLevel(logging.ERROR)
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
        raise UsageError(
            f"cannot join the Ray cluster at {address!r} ({_first_line(exc)}); check "
            "--ray-address, that this machine reaches the cluster, and that the environment "
            "has the cluster's authentication settings (RAY_AUTH_MODE, its token) if it uses them"
        ) from None


def _decode_cpus(count: int, device: str, gpus: int, cpus: float) -> float:
    """CPUs a decode task reserves beside `count` actors on a cluster of `gpus` GPUs and
    `cpus` CPUs (at most `DECODE_CPUS` on a CPU-only cluster, 1 with GPUs); UsageError when
    the actors could never all run, or would leave the decode tasks no CPU to run on (Ray
    would wait for them for ever)."""
    if device == "cuda" and count > gpus:
        raise UsageError(
            f"--actors {count}: the Ray cluster has {gpus} GPU(s), one for each actor; "
            f"use --actors {gpus} or fewer"
        )
    per_actor = _actor_cpus(device)
    spare = cpus - count * per_actor
    if spare < MIN_DECODE_CPUS:
        most = max(0, math.floor((cpus - MIN_DECODE_CPUS) / per_actor))
        advice = f"use --actors {most} or fewer" if most else "give the cluster more CPUs"
        raise UsageError(
            f"--actors {count}: {count} actor(s) of {per_actor:g} CPU leave the decode tasks "
            f"{max(spare, 0):g} of the Ray cluster's {cpus:g} CPUs; {advice}"
        )
    return min(DECODE_CPUS if device == "cpu" else 1.0, spare)


def _actor_cpus(device: str) -> float:
    """CPUs an embedding actor reserves: one beside its GPU, else `ACTOR_CPUS`."""
    return 1.0 if device == "cuda" else ACTOR_CPUS


def _get(refs: Any, doing: str = "") -> Any:
    """`ray.get(refs)`; EngineFailed (one line) when a task or an actor failed for good
    (`doing`: what the failure stopped, when not the run's batches) or the connection to
    the cluster was lost."""
    try:
        return ray.get(refs)
    except (ray.exceptions.RayError, ConnectionError) as exc:
        cause = getattr(exc, "cause", None)  # a task's own exception, under Ray's wrapper
        if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, BaseException):
            reason = f"{type(cause).__name__}: {_first_line(cause)}"
        else:
            reason = _first_line(exc)
        if doing:
            raise EngineFailed(f"the Ray cluster failed while {doing} ({reason})") from None
        raise EngineFailed(
            f"the Ray run failed ({reason}); the batches committed before it are kept: run "
            "the same command again to resume"
        ) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _items(chunk: list[FileEntry]) -> list[_Item]:
    return [(e.path, e.link, e.device, e.inode) for e in chunk]


@functools.cache
def _machine() -> str:
    """This machine, as a decode task tells it apart from others: its host name and the
    kernel's boot id (the same in every process of one boot of one machine)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _warm() -> None:
    from ..sources import decode  # noqa: F401  (what `_decode` needs, imported now)


def _decode(
    items: list[_Item], preprocess: Preprocess, max_megapixels: float, machine: str
) -> _Decoded:
    """A decode task (see `_Decoded`); `machine` is the driver's (`_machine`)."""
    results, pixels = decode_items(items, preprocess, max_megapixels, machine == _machine())
    return results, pixels, ray.get_runtime_context().get_node_id()


def decode_items(
    items: list[_Item], preprocess: Preprocess, max_megapixels: float, scanning_machine: bool
) -> tuple[list[FileResult], np.ndarray]:
    """Decode `items` with the scan's read rules: on the machine that scanned them each
    file must be the one scanned (st_dev and st_ino); on another machine only its st_ino is
    compared, since a shared filesystem has other device numbers there (its inode numbers
    are the server's: NFS, Lustre, CephFS)."""
    rules = {
        path: (follow, ((dev if scanning_machine else None), ino) if ino else None)
        for path, follow, dev, ino in items
    }
    results = decode_files([path for path, *_ in items], preprocess, max_megapixels, rules)
    pixels = np.zeros((len(results), preprocess.height, preprocess.width, 3), np.uint8)
    for i, result in enumerate(results):
        if result.pixels is not None:
            pixels[i] = result.pixels
    return [replace(r, pixels=None) for r in results], pixels


class _Embedder:
    """An embedding actor: loads the run's model once, then embeds decoded batches. A model
    that cannot be loaded is kept as the answer to `describe` (a RetrievalError as raised;
    anything else, say torch missing on that node, as a ModelError naming it)."""

    def __init__(self, model: ModelRequest, device: str, precision: str) -> None:
        self.node = ray.get_runtime_context().get_node_id()
        self.error: RetrievalError | None = None
        try:
            if model.manifest is not None:
                self.model = embedders.load_for(model.manifest, device, precision)
            else:
                self.model = embedders.load(model.name, model.weights, device, precision)
        except RetrievalError as exc:
            self.error = exc
            return
        except Exception as exc:  # noqa: BLE001 - told to the driver in one line
            self.error = ModelError(
                f"a Ray actor on {socket.gethostname()} could not load {model.name} "
                f"({type(exc).__name__}: {_first_line(exc)}); check that node's installation"
            )
            return
        embedders.configure_threads(self.model.device, None)

    def describe(self) -> tuple[Any, str] | RetrievalError:
        """(ModelInfo, precision) of the loaded model, or why it could not be loaded."""
        return self.error or (self.model.info, self.model.precision)

    def embed(self, *parts: _Decoded) -> tuple[list[FileResult], set[str], str]:
        """Decode tasks' outputs -> their files' `FileResult`s, a decoded one's `pixels`
        holding its vector ((d,) float32), plus the decode nodes and this node."""
        fault_point("actor-embed")
        results = [r for part in parts for r in part[0]]
        pixels = np.concatenate([part[1] for part in parts])
        ok = np.array([r.error is None for r in results], bool)
        vectors = self.model.embed(pixels[ok]) if ok.any() else None
        rows = iter(vectors if vectors is not None else ())
        out = [
            replace(r, pixels=next(rows)) if good else r
            for r, good in zip(results, ok, strict=True)
        ]
        return out, {part[2] for part in parts if part[2]}, self.node
