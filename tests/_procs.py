"""Helpers for the crash, fault, damage and concurrency tests (not a test module).

Starting Python and importing torch costs seconds, so the CLI runs these tests kill go through
a *zygote*: one process that imports retrieval, torch, timm and faiss once and then forks a
child per run. Each child runs `retrieval.cli.main(argv)` exactly as `python -m retrieval`
does, in its own process group, with stdout and stderr going to files; killing it is a real
SIGKILL of a real process. The zygote itself never runs a model (forking after torch has
started its thread pool is unsafe); each child runs on one CPU (see `single_cpu`).

Run as a script, this file is the zygote: it reads JSON requests on stdin, one per line.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

#: Options for a fast, offline, deterministic index run.
FAST = ["--model", "test_resnet", "--no-pretrained", "--batch-size", "4", "--workers", "0"]
ROOT = Path(__file__).resolve().parent.parent


# -- data ---------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (bound, then released): for a test's server, or for
    a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def make_images(folder: Path, n: int, seed: int = 0, start: int = 0) -> list[Path]:
    """Write `n` distinct small PNGs (Pillow-drawn, seeded) as folder/img_XXXX.png."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(start, start + n):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        image = Image.new("RGB", (40, 32), colour)
        draw = ImageDraw.Draw(image)
        x, y = (int(v) for v in rng.integers(0, 24, 2))
        draw.rectangle([x, y, x + 12, y + 10], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw.text((2, 2), str(i), fill=(0, 0, 0))
        path = folder / f"img_{i:04d}.png"
        image.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module", autouse=True)
def one_cpu() -> Iterator[None]:
    """Import this into a test module to run its tests under `single_cpu`."""
    with single_cpu():
        yield


@contextlib.contextmanager
def single_cpu() -> Iterator[None]:
    """Run this process on one CPU while the block runs, torch with one thread.

    `retrieval index` gives torch one thread per CPU it may use; on a small shared test
    machine the tiny test model is then slower (threads wait for each other), not faster.
    """
    import torch

    cpus, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {min(cpus)})
    torch.set_num_threads(1)
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)
        torch.set_num_threads(threads)


# -- running the CLI in child processes ---------------------------------------------------------


@dataclass
class Run:
    """A CLI run in a forked child: its pid and where its output goes."""

    pid: int
    out: Path
    err: Path
    status: int | None = None  # exit code, or -signal number

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def json(self) -> dict:
        return json.loads(self.stdout)


class Zygote:
    """Client side: starts the zygote process and talks to it."""

    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        for key in ("RETRIEVAL_TEST_KILL_AT", "RETRIEVAL_TEST_PAUSE_AT"):
            env.pop(key, None)
        self.proc = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=ROOT,
            env=env,
        )
        self.lock = threading.Lock()
        self.scratch = Path(tempfile.mkdtemp(prefix="retrieval-zygote-"))
        self.count = 0
        assert self._ask({"op": "ping"}) == {"ok": True}

    def _ask(self, request: dict) -> dict:
        with self.lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the zygote process died")
        return json.loads(line)

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> Run:
        """Fork a child running `retrieval ARGV` with `env` added to the environment."""
        self.count += 1
        out = self.scratch / f"run{self.count}.out"
        err = self.scratch / f"run{self.count}.err"
        reply = self._ask(
            {"op": "start", "argv": argv, "env": env or {}, "out": str(out), "err": str(err)}
        )
        return Run(reply["pid"], out, err)

    def wait(self, run: Run, timeout: float = 120.0) -> int:
        """The child's exit code (-N if signal N ended it); raises TimeoutError."""
        if run.status is None:
            reply = self._ask({"op": "wait", "pid": run.pid, "timeout": timeout})
            if reply["status"] is None:
                raise TimeoutError(f"retrieval run {run.pid} still running after {timeout} s")
            run.status = reply["status"]
        return run.status

    def poll(self, run: Run, timeout: float = 0.0) -> int | None:
        """The child's exit code if it ended (within `timeout` s), else None."""
        if run.status is None:
            run.status = self._ask({"op": "wait", "pid": run.pid, "timeout": timeout})["status"]
        return run.status

    def run(self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> Run:
        run = self.start(argv, env)
        self.wait(run, timeout)
        return run

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.scratch, ignore_errors=True)


_ZYGOTE: Zygote | None = None


def zygote() -> Zygote:
    """The one zygote of this test session (started on first use)."""
    global _ZYGOTE
    if _ZYGOTE is None or _ZYGOTE.proc.poll() is not None:
        _ZYGOTE = Zygote()
        atexit.register(_ZYGOTE.close)
    return _ZYGOTE


def wait_for_file(path: Path, run: Run, zyg: Zygote, timeout: float = 60.0) -> None:
    """Wait until `path` exists (a paused child created it); fail if the child exits first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if zyg.poll(run) is not None:
            raise AssertionError(f"run ended ({run.status}) before pausing:\n{run.stderr}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run.pid} did not reach its pause point")
        time.sleep(0.02)


def pause_env(point: str, flag: Path) -> dict[str, str]:
    return {"RETRIEVAL_TEST_PAUSE_AT": point, "RETRIEVAL_TEST_PAUSE_FILE": str(flag)}


def kill_env(point: str) -> dict[str, str]:
    return {"RETRIEVAL_TEST_KILL_AT": point}


# -- decode workers ----------------------------------------------------------------------------


def workers_of(pid: int) -> list[int]:
    """Pids of the live decode workers started by process `pid` (found by their command
    line, which names the parent: they are re-parented once it dies)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if b"retrieval.ops.workers" in b" ".join(argv) and str(pid).encode() in argv[-2:]:
            if state != b"Z":
                found.append(int(entry))
    return found


def assert_gone(pids: list[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and _state(p) != b"Z"]
        if not alive:
            return
        assert time.monotonic() < deadline, f"decode workers {alive} outlived their parent"
        time.sleep(0.05)


def _state(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return b"Z"


# -- looking at an index directory ---------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: int
    gen: int
    status: str
    vector: bytes | None


def rows(index: Path) -> dict[bytes, Row]:
    """Every catalogue row by path, read with the standard library's sqlite3 (not ours)."""
    path = index / "catalog.sqlite"
    if not path.exists():
        return {}
    with _scratch_copy(index) as copy:
        conn = sqlite3.connect(copy / "catalog.sqlite")
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "images" not in tables:
                return {}
            found = conn.execute("SELECT path, id, gen, status, vector FROM images").fetchall()
        finally:
            conn.close()
    return {p: Row(i, g, s, v) for p, i, g, s, v in found}


def integrity(index: Path) -> list[str]:
    """`PRAGMA integrity_check` through the standard library: ['ok'] when sound."""
    with _scratch_copy(index) as copy:
        conn = sqlite3.connect(copy / "catalog.sqlite")
        try:
            return [r[0] for r in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()


def temps(index: Path) -> list[str]:
    """Temporary files (ours: '.NAME.tmp-PID-N') in the index directory."""
    return sorted(n for n in os.listdir(index) if n.startswith(".") and ".tmp-" in n)


def verify(index: Path) -> dict[bytes, Row]:
    """Assert the crash invariants of an index directory; returns its rows.

    Works on a copy, so that a reader repairing a cache file does not change what the next
    run finds: the catalogue passes integrity_check; the vector index, loaded and patched
    as every search does, holds exactly the stored vectors (same ids, no duplicate ids in
    the FAISS file, and for flat indexes the very same vectors).
    """
    from retrieval.errors import IndexNotFound
    from retrieval.store import vectors
    from retrieval.store.index_dir import IndexDir

    assert integrity(index) == ["ok"]
    found = rows(index)
    with _scratch_copy(index) as copy:
        _check_finds_only_leftovers(copy, found)
        try:
            opened = IndexDir.open(copy)
        except IndexNotFound:
            # Killed before the first manifest was committed: an empty, manifest-less index.
            assert not found, "rows without a manifest"
            return found
        with opened:
            cached, stored = opened.effective_ids()
            assert np.array_equal(cached, stored)
            base = opened.base()
            in_file = vectors.stored_ids(base.index)
            assert len(np.unique(in_file)) == len(in_file), "duplicate ids in vectors.faiss"
            ok = {r.id: r for r in found.values() if r.status == "ok"}
            assert sorted(ok) == stored.tolist()
            dim = opened.require_manifest().dim
            with opened.catalog.read() as conn:
                delta = opened.catalog.delta(conn, base.generation, dim)
            live = in_file[~np.isin(in_file, delta.stale)]
            got = vectors.reconstruct(base.index, live)
            want = (
                np.stack([np.frombuffer(ok[int(i)].vector, np.float32) for i in live])
                if len(live)
                else np.zeros((0, dim), np.float32)
            )
            assert np.array_equal(got, want), "vectors.faiss differs from the stored vectors"
    return found


def _check_finds_only_leftovers(copy: Path, found: dict[bytes, Row]) -> None:
    """`retrieval check` agrees: at most temporary files and not-yet-written derived files
    are missing, and --repair fixes them."""
    from retrieval.errors import IndexNotFound
    from retrieval.ops.checking import check

    try:
        report = check(copy)
    except IndexNotFound:
        assert not found
        return
    allowed = {"vectors.faiss: missing", "manifest.json: missing"}
    for p in report.problems:
        assert p.problem.startswith("temporary file") or f"{p.file}: {p.problem}" in allowed, p
    assert check(copy, repair=True).ok


class _scratch_copy:
    """Context manager: a throwaway copy of an index directory (without the lock file)."""

    def __init__(self, index: Path) -> None:
        self.index = index
        self.tmp = Path(tempfile.mkdtemp(prefix="retrieval-copy-"))

    def __enter__(self) -> Path:
        copy = self.tmp / "index"
        shutil.copytree(self.index, copy, ignore=shutil.ignore_patterns("writer.lock"))
        return copy

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def vectors_by_path(index: Path) -> dict[bytes, np.ndarray]:
    return {
        p: np.frombuffer(r.vector, np.float32)
        for p, r in rows(index).items()
        if r.status == "ok" and r.vector is not None
    }


def assert_same_as(index: Path, reference: Path) -> None:
    """Same paths and (allclose 1e-6) the same vectors as a clean build."""
    got, want = vectors_by_path(index), vectors_by_path(reference)
    assert sorted(got) == sorted(want)
    for path, vector in want.items():
        np.testing.assert_allclose(got[path], vector, atol=1e-6, rtol=0)


# -- the zygote process ------------------------------------------------------------------------


def _serve() -> None:
    import faiss  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401

    import retrieval.api  # noqa: F401
    import retrieval.cli
    import retrieval.embedding.embedder  # noqa: F401
    import retrieval.ops.exchange  # noqa: F401
    import retrieval.ops.indexing  # noqa: F401

    reply = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "ping":
            answer: dict = {"ok": True}
        elif op == "start":
            reply.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request, retrieval.cli.main)
            answer = {"pid": pid}
        elif op == "wait":
            answer = {"status": _wait(request["pid"], request["timeout"])}
        else:
            answer = {"error": f"unknown op {op}"}
        reply.write(json.dumps(answer) + "\n")
        reply.flush()


def _wait(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)


def _child(request: dict, main: object) -> None:
    code = 1
    try:
        os.setpgid(0, 0)
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[os.getpid() % len(cpus)]})  # see `single_cpu`
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        os.dup2(os.open(request["out"], flags, 0o644), 1)
        os.dup2(os.open(request["err"], flags, 0o644), 2)
        try:
            main(request["argv"])  # type: ignore[operator]
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 99
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    _serve()


def built_index(root: Path, n: int) -> tuple[Path, Path]:
    """(photos, index): `n` drawn images under root/photos, indexed into root/index with the
    tiny model. Tests that damage an index build one per module and work on copies."""
    from conftest import run_cli  # conftest imports nothing from here: no cycle

    photos = root / "photos"
    make_images(photos, n)
    index = root / "index"
    result = run_cli("index", photos, "--index", index, *FAST)
    assert result.exit_code == 0, result.stderr
    return photos, index


def copy_index(index: Path, tmp_path: Path) -> Path:
    """A copy of `index` under tmp_path, for one test to damage."""
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    return copy
