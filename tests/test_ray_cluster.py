"""`--ray-address auto` and `--ray-address HOST:PORT`: runs that join a running cluster.

The cluster is a real one, started as a user starts a head node: Ray's own CLI, `ray start
--head` on loopback (free ports, a temp dir of its own, 2 CPUs, no dashboard, token auth
off). `--block` keeps its processes tied to that one `ray start` process (Ray's fate-sharing:
they die with it), started in a process group of its own, so the test stops exactly what it
started: SIGTERM to that process, then SIGKILL to anything still running from its temp dir.
Never `ray stop`: it stops every Ray of this user on the machine, other people's included.

Each run must equal a local run (same paths, ids and states; cosine >= 0.9999), commit each
file once, and leave the cluster running: a joined cluster is disconnected, never shut down.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import _procs as P
import pytest
from test_ray_engine import LOOPBACK, TIMEOUT, _assert_same_rows, _index, local, photos

pytestmark = pytest.mark.slow
__all__ = ["local", "photos"]  # module fixtures shared with test_ray_engine

#: The head and every run of these tests: loopback, and no token (Ray >= 2.5x's `ray start`
#: turns token auth on and keeps the token under ~/.ray; a test must not depend on that).
CLUSTER_ENV = {**LOOPBACK, "RAY_AUTH_MODE": "disabled"}


@dataclass(frozen=True)
class Head:
    """A running `ray start --head`: its GCS address (HOST:PORT) and its Ray Client
    server's (ray://HOST:PORT)."""

    gcs: str
    client: str
    process: subprocess.Popen[bytes]
    temp_dir: str


def _from_dir(temp_dir: str) -> set[int]:
    """Pids of live processes of the head: their command line names `temp_dir` (the
    servers) or they hold a file under it open (the agents and workers, renamed "ray::..."
    and holding their logs there)."""
    return {
        int(name)
        for name in os.listdir("/proc")
        if name.isdigit() and int(name) != os.getpid() and _uses(int(name), temp_dir)
    }


def _uses(pid: int, temp_dir: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if temp_dir.encode() in f.read():
                return True
        return any(
            os.readlink(f"/proc/{pid}/fd/{fd}").startswith(temp_dir)
            for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except OSError:  # gone, or not ours to read
        return False


def _stop(head: Head) -> None:
    """SIGTERM to `ray start` (it shuts its node down), then SIGKILL what is left of it."""
    if head.process.poll() is None:
        head.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.process.pid, signal.SIGKILL)
    head.process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _from_dir(head.temp_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _from_dir(head.temp_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _started(env: dict[str, str]) -> Iterator[Head]:
    """`ray start --head` with `env` (see the module docstring), stopped on the way out."""
    # Ray's sockets live under the temp dir: a short path (AF_UNIX paths hold 107 bytes)
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    gcs, client = P.free_port(), P.free_port()
    log = Path(temp_dir) / "ray-start.out"
    argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block"]
    argv += ["--node-ip-address=127.0.0.1", f"--port={gcs}", f"--ray-client-server-port={client}"]
    argv += ["--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"]
    argv += [f"--temp-dir={temp_dir}"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},  # its log, line by line
            start_new_session=True,
        )
    started = Head(f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{client}", process, temp_dir)
    try:
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in log.read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield started
    finally:
        _stop(started)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert _from_dir(temp_dir) == set()


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    with _started(CLUSTER_ENV) as started:
        yield started


def _answers(head: Head) -> None:
    """The cluster still runs and answers a new driver (ours disconnected, did not stop it)."""
    assert head.process.poll() is None, "the head's `ray start` exited"
    ping = "import ray, sys; ray.init(sys.argv[1]); print(ray.cluster_resources()['CPU'])"
    done = subprocess.run(
        [sys.executable, "-c", ping, head.gcs],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **CLUSTER_ENV},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "2.0"


def _check_run(done: subprocess.CompletedProcess[str], index: Path, local: Path) -> None:
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert (got["added"], len(got["failed"])) == (11, 2)
    assert "ray: decoded on 1 node(s), embedded by 1 cpu actor(s) on 1 node(s)" in done.stderr
    _assert_same_rows(index, local)  # each file once, the local engine's ids and vectors


def test_auto_joins_the_cluster_in_ray_address(
    head: Head, photos: Path, local: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    env = {**CLUSTER_ENV, "RAY_ADDRESS": head.gcs}
    done = _index(photos, index, "--engine", "ray", "--ray-address", "auto", env=env)
    _check_run(done, index, local)
    _answers(head)


def test_a_ray_client_address_joins_through_the_ray_client(
    head: Head, photos: Path, local: Path, tmp_path: Path
) -> None:
    """ray://HOST:PORT: the driver runs here and talks to the cluster through the Ray
    Client server of its head (the engine uses Ray's core API only, which the Ray Client
    carries; Ray Data's executor could not run through it, ray-project/ray#42739)."""
    index = tmp_path / "index"
    done = _index(photos, index, "--engine", "ray", "--ray-address", head.client, env=CLUSTER_ENV)
    _check_run(done, index, local)
    _answers(head)


def test_a_token_cluster_is_joined_with_its_token_and_refused_in_one_line_without(
    photos: Path, local: Path, tmp_path: Path
) -> None:
    """Ray's token authentication (on by default for `ray start` since Ray 2.5x): with the
    cluster's RAY_AUTH_MODE and RAY_AUTH_TOKEN in its environment the run joins and equals a
    local run; without them Ray retries for ~20 s (printing its own warnings), then the run
    ends with one error line that names the auth settings, before any index is created.
    HOME is a temp dir, so no ~/.ray/auth_token of this machine is read or written."""
    home = tmp_path / "home"
    home.mkdir()
    token = secrets.token_hex(32)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "HOME": str(home)}
    with _started({**LOOPBACK, **auth}) as token_head:
        index = tmp_path / "index"
        done = _index(photos, index, "--engine", "ray", "--ray-address", token_head.gcs, env=auth)
        _check_run(done, index, local)
        refused = tmp_path / "refused"
        without = {"RAY_AUTH_MODE": "disabled", "HOME": str(home)}
        done = _index(
            photos, refused, "--engine", "ray", "--ray-address", token_head.gcs, env=without
        )
        assert done.returncode == 1, done.stderr
        assert (
            done.stderr.strip()
            .splitlines()[-1]
            .startswith(f"error: cannot join the Ray cluster at '{token_head.gcs}' (")
        )
        assert "authentication settings (RAY_AUTH_MODE, its token)" in done.stderr
        assert not refused.exists()
