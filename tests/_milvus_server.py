"""A real Milvus server for the tests (not a test module): the standalone server binary that
PyPI's `milvus` package ("Embedded Milvus", 2.3.5) carries, started once per session.

`milvus_server` (registered in conftest.py) yields its URI, http://127.0.0.1:PORT. The server
lives in its own temporary folder (configuration, etcd, data, logs), on free ports, each
component told to advertise 127.0.0.1 and clients connect to 127.0.0.1 only; it must answer
its health check within START_SECONDS and is always stopped (SIGTERM, then SIGKILL) at the end
of the session. The tests that use it are skipped, with the reason, only when the `milvus`
package is not installed (`pip install -e '.[test]'`); a server that is installed but does not
start fails them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from _procs import free_port

#: The longest a server may take to answer its health check (it took 8 s on a loaded 2-core
#: machine; it unpacks its binary into its folder first).
START_SECONDS = 120
#: The server's components: each is told to advertise 127.0.0.1 instead of the first
#: non-loopback address.
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


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """http://127.0.0.1:PORT of a Milvus 2.3 standalone server, for the whole session."""
    milvus = pytest.importorskip(
        "milvus", reason="the Milvus server tests need PyPI's `milvus` package (.[test])"
    )
    server = milvus.MilvusServer(wait_for_started=False)
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus-server")))
    for component in COMPONENTS:
        server.config.set(f"{component}.ip", "127.0.0.1")
    ports = [key for key in server.config.configurable_items if key.endswith("_port")]
    server.config.update(**{key: free_port() for key in ports})
    started = time.monotonic()
    try:
        server.start()
        server.wait_started(timeout=START_SECONDS * 1000)
        took = time.monotonic() - started
        print(f"milvus server {milvus.__version__} answered in {took:.1f} s")
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()
