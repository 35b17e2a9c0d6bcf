"""The Ray engine's own Ray: started in the background while the run scans and plans, and
shut down on every path, including those that never embed (nothing to do, Ctrl-C before the
first batch). Every run is a `python -m retrieval` subprocess bounded by a timeout; the
`no_ray_left` fixture fails a test that leaves a Ray server running.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import _procs as P
import pytest
from test_ray_engine import (
    MODEL,
    _assert_same_rows,
    _index,
    _paused,
    _ray_processes,
    local,
    no_ray_left,
    photos,
)

pytestmark = pytest.mark.slow
__all__ = ["local", "no_ray_left", "photos"]  # fixtures shared with test_ray_engine


def test_ctrl_c_while_ray_starts_in_the_background_shuts_it_down(
    photos: Path, tmp_path: Path, no_ray_left: set[int]
) -> None:
    """Paused after the scan, before any batch: Ray is already starting (its servers show
    up while the run waits there); Ctrl-C then exits 130 and leaves no Ray process."""
    index, flag = tmp_path / "index", tmp_path / "paused"
    argv = [sys.executable, "-m", "retrieval", "index", str(photos), "--index", str(index)]
    argv += [*MODEL, "--engine", "ray", "-q"]
    before = _ray_processes()
    with _paused(argv, "scanned:1", flag) as run:
        deadline = time.monotonic() + 60
        while not _ray_processes() - before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _ray_processes() - before, "Ray did not start while the run scanned"
        os.killpg(run.pid, signal.SIGINT)
        _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "retrieval: interrupted: finished work was kept" in err


def test_a_run_with_nothing_to_embed_still_shuts_ray_down(
    tmp_path: Path, no_ray_left: set[int]
) -> None:
    photos, index = tmp_path / "photos", tmp_path / "index"
    P.make_images(photos, 5)
    assert _index(photos, index, "--workers", "0").returncode == 0
    again = _index(photos, index, "--engine", "ray")
    assert again.returncode == 0, again.stderr
    got = json.loads(again.stdout)
    assert (got["added"], got["unchanged"]) == (0, 5)


def test_without_an_address_ray_starts_here_even_with_ray_address_set(
    photos: Path, local: Path, tmp_path: Path, no_ray_left: set[int]
) -> None:
    """RAY_ADDRESS (left over from a cluster session) must not make the default run try to
    join that cluster: no --ray-address means Ray on this machine."""
    index = tmp_path / "index"
    nowhere = {"RAY_ADDRESS": f"127.0.0.1:{P.free_port()}"}  # nothing listens there
    done = _index(photos, index, "--engine", "ray", env=nowhere)
    assert done.returncode == 0, done.stderr
    assert (json.loads(done.stdout)["added"], len(json.loads(done.stdout)["failed"])) == (11, 2)
    _assert_same_rows(index, local)


def test_sigterm_to_the_driver_keeps_finished_batches_and_shuts_ray_down(
    photos: Path, tmp_path: Path, no_ray_left: set[int]
) -> None:
    """SIGTERM (`kill`, `timeout`, a service manager) to the driver alone: it exits through
    its `finally` blocks, as `ray.init` arranges in a main thread, so Ray is shut down and
    the committed batch stays."""
    index, flag = tmp_path / "index", tmp_path / "paused"
    argv = [sys.executable, "-m", "retrieval", "index", str(photos), "--index", str(index)]
    argv += [*MODEL, "--engine", "ray", "--batch-size", "4", "-q"]
    with _paused(argv, "batch-committed:1", flag) as run:
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    assert run.returncode == signal.SIGTERM, err
    assert [r.status for r in P.rows(index).values()].count("ok") == 4
