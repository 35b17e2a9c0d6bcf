"""A real Milvus server for the tests (not a test module): the standalone server binary that
PyPI's `milvus` package ("Embedded Milvus", 2.3.5) carries.

`milvus_server` (a session fixture, registered in conftest.py) yields its URI,
http://127.0.0.1:PORT. The server lives in its own temporary folder (configuration, etcd,
data, logs, its unpacked binary), on free ports, each component told to advertise 127.0.0.1,
and clients connect to 127.0.0.1 only (Milvus 2.3 binds its gRPC ports on every interface:
it has no setting for the address it listens on). It must answer its health check within
START_SECONDS and is always stopped (SIGTERM, then SIGKILL after 1 s) at the end of the
session. The tests that use it are skipped, with the reason, only when the `milvus` package
is not installed (`pip install -e '.[test]'`); a server that is installed but does not start
fails them.

Run as a script, it starts one, reports its start time, then its CPU and memory while idle:

    .venv/bin/python tests/_milvus_server.py --idle 30
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from _procs import free_port  # noqa: E402

#: The longest a server may take to answer its health check (it took 6-8 s on a loaded
#: 2-core machine, unpacking its 246 MB of binaries into its folder first).
START_SECONDS = 120
#: The server's components: each is told to advertise 127.0.0.1 instead of the machine's
#: first non-loopback address.
COMPONENTS = (
    "rootCoord",
    "proxy",
    "queryCoord",
    "queryNode",
    "indexCoord",
    "indexNode",
    "dataCoord",
    "dataNode",
)


@contextlib.contextmanager
def running_server(milvus: Any, folder: str) -> Iterator[tuple[str, Any]]:
    """(http://127.0.0.1:PORT, the MilvusServer) of a server started in `folder` from the
    `milvus` module; stopped on leaving, however it is left."""
    server = milvus.MilvusServer(wait_for_started=False)
    server.set_base_dir(folder)
    for component in COMPONENTS:
        server.config.set(f"{component}.ip", "127.0.0.1")
    ports = [key for key in server.config.configurable_items if key.endswith("_port")]
    server.config.update(**{key: free_port() for key in ports})
    try:
        server.start()
        server.wait_started(timeout=START_SECONDS * 1000)
        yield f"http://127.0.0.1:{server.listen_port}", server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """http://127.0.0.1:PORT of a Milvus 2.3 standalone server, for the whole session."""
    milvus = pytest.importorskip(
        "milvus", reason="the Milvus server tests need PyPI's `milvus` package (.[test])"
    )
    started = time.monotonic()
    with running_server(milvus, str(tmp_path_factory.mktemp("milvus-server"))) as (uri, _):
        print(f"milvus server {milvus.__version__} answered in {time.monotonic() - started:.1f} s")
        yield uri


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    import milvus

    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=30, help="seconds to watch it idle")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        with running_server(milvus, folder) as (uri, server):
            took = time.monotonic() - started
            pid = server.server_proc.pid
            before = _cpu_seconds(pid)
            time.sleep(args.idle)
            idle = (_cpu_seconds(pid) - before) / args.idle
            report = {
                "milvus": milvus.__version__,
                "uri": uri,
                "start_s": round(took, 1),
                "idle_cpu_cores": round(idle, 4),
                "rss_mib": _rss_bytes(pid) >> 20,
            }
        print(json.dumps(report))


if __name__ == "__main__":
    main()
