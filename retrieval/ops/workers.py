"""Decode worker processes that belong to the caller and die with it.

Each worker is a fresh interpreter started as `python -c <bootstrap>` that imports only our
decode code: unlike multiprocessing's spawn (and forkserver, which preloads `__main__`), it
never re-runs the caller's script, so the library works from a plain script without an
`if __name__ == "__main__":` guard, from a notebook and from `python -c`. Requests and results
travel as pickles over the worker's stdin and stdout, one at a time in order; a thread per
worker reads its results as they come, so workers keep decoding while the caller runs the
model. A worker exits when its parent dies: Linux sends it SIGKILL (PR_SET_PDEATHSIG), and
everywhere it sees end-of-file on stdin once the parent's end of the pipe is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pickle
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from ..errors import WorkersUnavailable
from ..sources.decode import FileResult, load_file
from ..specs import Preprocess

#: The folder holding the `retrieval` package, put first on the worker's path so it imports
#: the very code its parent runs.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Ctrl-C is the parent's to handle (it keeps finished batches): ignored from the first line.
_BOOTSTRAP = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from retrieval.ops.workers import serve; serve(int(sys.argv[2]))"
)
#: Linux prctl option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
#: Files the parent holds open per worker (its ends of the two pipes), and those kept free for
#: the rest of a run (SQLite's database, journal and shared memory, the lock, the FAISS file,
#: a worker's pipes while it starts): measured, a test_resnet run with 2 workers peaked at 9
#: files beyond the 6 open when it began, 5 of them not the workers'.
FILES_PER_WORKER = 2
FILES_RESERVED = 12
#: Seconds a worker may take to start (import numpy and Pillow) before it counts as failed.
START_TIMEOUT = 120.0


#: Per path, what the reader checks (see `load_file`): (follow a symbolic link there, the
#: scan's (st_dev, st_ino) or None). A path not listed: no link followed, identity unknown.
ReadRules = Mapping[bytes, tuple[bool, tuple[int | None, int] | None]]


@dataclass(frozen=True)
class Request:
    """Decode `paths` (files `first`, `first + 1`, ... of the stream) under `rules`."""

    first: int
    paths: Sequence[bytes]
    preprocess: Preprocess
    max_megapixels: float
    rules: ReadRules | None = None


@dataclass
class Worker:
    """One decode process; `sent` are its unanswered requests, oldest first."""

    process: subprocess.Popen[bytes]
    reader: threading.Thread | None = None
    sent: list[Request] = field(default_factory=list)
    #: Set once it has said it is ready, or failed to (then `failure` says why).
    started: threading.Event = field(default_factory=threading.Event)
    failure: str | None = None
    #: No new requests: it is retired once it has answered those it holds.
    retiring: bool = False


@dataclass(frozen=True)
class Answer:
    """A worker's answer to one request, and the CPU seconds it spent decoding it."""

    results: list[FileResult]
    cpu_s: float


class Pool:
    """`start(n)` decode processes; `send` requests, `events` yields their answers.

    Events on the `events` queue: ("result", worker, Answer) for the worker's oldest
    unanswered request, then ("exit", worker, None) once it has ended (crashed or closed).
    Workers can be added and retired while requests are in flight. Use as a context manager:
    closing kills every worker and waits for it.
    """

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Worker, Answer | None]] = queue.Queue()
        self.workers: list[Worker] = []

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, count: int) -> None:
        """Start `count` workers and wait until each is ready. Raises WorkersUnavailable."""
        starting = []
        for _ in range(count):
            try:
                starting.append(self._spawn())
            except OSError as exc:
                raise _cannot_start(count, exc) from None
        for worker in starting:
            self._wait_ready(worker, count)

    def add(self) -> Worker:
        """Start one more worker without waiting for it: requests sent meanwhile wait in its
        pipe; one that fails to start answers with an exit event. Raises OSError."""
        return self._spawn()

    def retire(self, worker: Worker) -> None:
        """Stop `worker`, which holds no request (or has died), and forget it."""
        self.workers.remove(worker)
        self._reap(worker)

    def replace(self, dead: Worker) -> Worker:
        """A fresh worker in place of `dead` (which has exited). Raises WorkersUnavailable."""
        self.workers.remove(dead)
        self._reap(dead)
        try:
            worker = self._spawn()
        except OSError as exc:
            raise _cannot_start(1, exc) from None
        self._wait_ready(worker, 1)
        return worker

    def send(self, worker: Worker, request: Request) -> None:
        """Queue `request` on `worker`; a worker that has died answers with an exit event."""
        worker.sent.append(request)
        stdin = worker.process.stdin
        assert stdin is not None
        try:
            pickle.dump(request, stdin, protocol=pickle.HIGHEST_PROTOCOL)
            stdin.flush()
        except OSError:  # BrokenPipe: it died; its reader reports the exit
            pass

    def close(self) -> None:
        """Kill every worker (they hold nothing worth finishing) and reap it."""
        for worker in self.workers:
            self._reap(worker)
        self.workers.clear()

    @staticmethod
    def _reap(worker: Worker) -> None:
        """Kill (if still alive: e.g. it answered garbage), wait, and close its pipes."""
        with contextlib.suppress(OSError):
            worker.process.kill()
        worker.process.wait()
        if worker.reader is not None:
            worker.reader.join()
        for stream in (worker.process.stdin, worker.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]

    def _spawn(self) -> Worker:
        process = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, _PACKAGE_ROOT, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        worker = Worker(process)
        worker.reader = threading.Thread(target=self._read, args=(worker,), daemon=True)
        self.workers.append(worker)
        worker.reader.start()
        return worker

    def _wait_ready(self, worker: Worker, count: int) -> None:
        if not worker.started.wait(START_TIMEOUT):
            raise _not_ready(count, "it did not start in time")
        if worker.failure is not None:
            raise _not_ready(count, worker.failure)

    def _read(self, worker: Worker) -> None:
        stdout: IO[bytes] = worker.process.stdout  # type: ignore[assignment]
        try:
            first = pickle.load(stdout)
            if first != "ready":
                worker.failure = str(first)
                return
            worker.started.set()
            while True:
                results, cpu_s = pickle.load(stdout)
                self.events.put(("result", worker, Answer(results, cpu_s)))
        except (EOFError, OSError, pickle.UnpicklingError, ValueError, TypeError):
            pass  # it ended (or died mid-answer): the exit event says so
        finally:
            if not worker.started.is_set():
                code = worker.process.wait()
                worker.failure = worker.failure or f"it exited with status {code} at start"
                worker.started.set()
            self.events.put(("exit", worker, None))


def check_open_files(count: int) -> None:
    """Raise WorkersUnavailable unless `count` workers fit under the open-files limit, so a
    run that cannot start them stops before it writes anything."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        return  # no /proc: starting them will tell
    needed = open_now + count * FILES_PER_WORKER + FILES_RESERVED
    if soft != resource.RLIM_INFINITY and needed > soft:
        raise _too_many_files(count, soft)


def _too_many_files(count: int, soft: int) -> WorkersUnavailable:
    return WorkersUnavailable(
        f"cannot start {count} decode workers: this process may open only {soft} files "
        "(ulimit -n); use fewer --workers or raise the limit (ulimit -n 4096)",
        count,
    )


def _cannot_start(count: int, exc: OSError) -> WorkersUnavailable:
    if exc.errno == errno.EMFILE:
        return _too_many_files(count, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    return WorkersUnavailable(
        f"cannot start {count} decode workers: {exc.strerror or exc}; use fewer --workers, "
        "or --workers 0 to decode in this process",
        count,
    )


def _not_ready(count: int, reason: str) -> WorkersUnavailable:
    return WorkersUnavailable(
        f"the decode workers could not start ({reason}); use --workers 0 to decode in this process",
        count,
    )


# -- the worker's side -------------------------------------------------------------------------


def serve(parent: int) -> None:
    """The worker's loop: answer each request on stdin with its list[FileResult] on stdout."""
    sys.stdout.flush()
    # Answers go to a private copy of stdout, and fd 1 becomes stderr: a library that prints
    # cannot corrupt them.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    try:
        _belong_to(parent)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        pickle.dump(f"{type(exc).__name__}: {exc}", out)
        out.flush()
        return
    pickle.dump("ready", out)
    out.flush()
    while True:
        try:
            request: Request = pickle.load(inp)
        except EOFError:  # the parent closed the pipe or died: nothing more to do
            return
        if os.getppid() != parent:  # no PR_SET_PDEATHSIG here, and the parent is gone
            return
        started = time.process_time()
        results = decode_files(
            request.paths, request.preprocess, request.max_megapixels, request.rules
        )
        answer = (results, time.process_time() - started)  # the cost, for `balance`
        pickle.dump(answer, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


def _belong_to(parent: int) -> None:
    """Die with `parent`: ask Linux for SIGKILL when the parent dies, and exit now if it
    already has (then we were re-parented)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def decode_files(
    paths: Sequence[bytes],
    preprocess: Preprocess,
    max_megapixels: float,
    rules: ReadRules | None = None,
) -> list[FileResult]:
    """`load_file` for each path, with its read rules (a worker's job; also used in-process)."""
    crash = os.environ.get("RETRIEVAL_TEST_CRASH_ON")
    results = []
    for path in paths:
        if crash and os.fsencode(crash) in path:  # tests: a decoder that kills its process
            os.kill(os.getpid(), signal.SIGKILL)
        follow, identity = rules.get(path, (False, None)) if rules else (False, None)
        results.append(
            load_file(path, preprocess, max_megapixels, follow_symlinks=follow, identity=identity)
        )
    return results
