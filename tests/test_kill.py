"""Hard kills and Ctrl-C during `retrieval index`: nothing committed is lost or redone.

A kill chain runs `retrieval index` again and again on one index, each run resuming what the
previous one left and killed (SIGKILL, via RETRIEVAL_TEST_KILL_AT, see
`retrieval.store.files.fault_point`) at a later point: scanning, embedding, inside and after
the catalogue transactions, and at each step of writing vectors.faiss and manifest.json.
After every kill (`_after_kill`):

* the catalogue passes `PRAGMA integrity_check`;
* the vector index, as every search loads it, holds exactly the stored vectors: the same
  ids, no duplicate id in the FAISS file, the very same vectors (flat index);
* every row committed before is still there, byte for byte (same id, generation and vector:
  nothing lost, nothing re-embedded);
The last run of a chain completes; it removes the temporary files killed runs left, and the
index equals a clean build of the same folder (same paths, same vectors).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import _procs as P
import pytest

N = 60  # images; batches of 4 -> 15 batch transactions


@pytest.fixture(scope="module")
def zyg() -> P.Zygote:
    return P.zygote()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("kill") / "photos"
    P.make_images(folder, N)
    return folder


@pytest.fixture(scope="module")
def reference(zyg: P.Zygote, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean, uninterrupted build of `photos`."""
    index = tmp_path_factory.mktemp("reference") / "index"
    run = zyg.run(["index", str(photos), "--index", str(index), "--json", *P.FAST])
    assert run.status == 0, run.stderr
    assert run.json()["added"] == N
    return index


def _index(zyg: P.Zygote, photos: Path, index: Path, kill: str | None = None) -> P.Run:
    argv = ["index", str(photos), "--index", str(index), "--json", *P.FAST]
    return zyg.run(argv, P.kill_env(kill) if kill else None)


class Chain:
    """Bookkeeping for a kill chain: the rows seen so far and the counts to report."""

    def __init__(self, index: Path, touched: set[bytes] = frozenset(), since_gen: int = 0):
        self.index = index
        self.touched = touched  # paths the folder changed: their old rows may go
        self.since_gen = since_gen  # rows written after this generation must stay
        self.rows = P.rows(index)
        self.kills = 0
        self.lost = 0

    def after_kill(self, run: P.Run, point: str) -> dict[bytes, P.Row]:
        assert run.status == -signal.SIGKILL, f"{point}: not killed ({run.status}): {run.stderr}"
        self.kills += 1
        now = P.verify(self.index)
        kept = {
            path: row
            for path, row in self.rows.items()
            if path not in self.touched or row.gen > self.since_gen
        }
        lost = [path for path, row in kept.items() if now.get(path) != row]
        self.lost += len(lost)
        assert lost == [], f"{point}: committed rows changed or vanished: {lost[:3]}"
        self.rows = now
        return now


def _finish(zyg: P.Zygote, photos: Path, index: Path, reference: Path) -> dict:
    run = _index(zyg, photos, index)
    assert run.status == 0, run.stderr
    assert P.temps(index) == []
    P.verify(index)
    P.assert_same_as(index, reference)
    return run.json()


#: Each run of a fresh build is killed at the next point; commits seen after each kill.
FRESH_CHAIN = [
    ("txn-open:1", 0),  # inside the transaction that stores the first manifest
    ("write-temp/manifest.json:1", 0),
    ("write-synced/manifest.json:1", 0),
    ("write-renamed/manifest.json:1", 0),
    ("scanned:1", 0),
    ("batch-embedded:1", 0),
    ("txn-open:1", 0),  # inside the first batch's transaction
    ("batch-committed:1", 4),
    ("batch-committed:3", 16),
    ("batch-embedded:3", 24),
    ("txn-open:2", 28),
    ("batch-committed:5", 48),
    ("write-temp/vectors.faiss:1", N),  # all rows committed, the cache not yet written
    ("write-synced/vectors.faiss:1", N),
    ("write-renamed/vectors.faiss:1", N),
]
#: After these kills a copy of the index is completed, to count what is embedded again.
BRANCH_AT = {"batch-embedded:1", "batch-embedded:3", "batch-committed:5"}


@pytest.mark.slow
def test_kill_chain_fresh_build(zyg, photos, reference, tmp_path):
    index = tmp_path / "index"
    chain = Chain(index)
    for point, committed in FRESH_CHAIN:
        run = _index(zyg, photos, index, kill=point)
        rows = chain.after_kill(run, point)
        assert len(rows) == committed, point
        if point in BRANCH_AT:
            branch = tmp_path / f"branch-{chain.kills}"
            shutil.copytree(index, branch, ignore=shutil.ignore_patterns("writer.lock"))
            report = _finish(zyg, photos, branch, reference)
            assert (report["added"], report["unchanged"]) == (N - committed, committed)
    report = _finish(zyg, photos, index, reference)
    assert (report["added"], report["unchanged"], report["updated"]) == (0, N, 0)
    assert (chain.kills, chain.lost) == (len(FRESH_CHAIN), 0)


def _change_folder(photos: Path) -> tuple[set[bytes], int]:
    """Delete 6 files, rewrite 3, rename 2, add 10; returns (touched paths, files now)."""
    touched = set()
    for i in range(6):
        path = photos / f"img_{i:04d}.png"
        touched.add(os.fsencode(path))
        path.unlink()
    for i, new in zip(range(10, 13), P.make_images(photos / "tmp", 3, seed=7), strict=True):
        path = photos / f"img_{i:04d}.png"
        shutil.move(new, path)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        touched.add(os.fsencode(path))
    (photos / "tmp").rmdir()
    for i in (20, 21):
        old, new = photos / f"img_{i:04d}.png", photos / f"moved_{i:04d}.png"
        old.rename(new)
        touched.update({os.fsencode(old), os.fsencode(new)})
    touched.update(os.fsencode(p) for p in P.make_images(photos, 10, seed=9, start=100))
    return touched, N - 6 + 10


#: An incremental run (moves, removals, 13 files to embed) killed at each next point.
UPDATE_CHAIN = [
    "scanned:1",
    "txn-open:1",  # inside the transaction re-pointing the moved files
    "txn-open:2",  # inside the transaction removing the deleted files
    "batch-embedded:1",
    "txn-open:1",  # inside the first batch's transaction
    "batch-committed:2",
    "write-temp/vectors.faiss:1",  # the cache file is patched from here on
    "write-synced/vectors.faiss:1",
    "write-renamed/vectors.faiss:1",
]


@pytest.mark.slow
def test_kill_chain_incremental_update(zyg, tmp_path):
    photos = tmp_path / "photos"
    P.make_images(photos, N)
    index = tmp_path / "index"
    assert _index(zyg, photos, index).status == 0
    generation = max(row.gen for row in P.rows(index).values())
    touched, files = _change_folder(photos)
    reference = tmp_path / "reference"
    assert _index(zyg, photos, reference).status == 0
    chain = Chain(index, touched, generation)
    for point in UPDATE_CHAIN:
        chain.after_kill(_index(zyg, photos, index, kill=point), point)
    report = _finish(zyg, photos, index, reference)
    assert report["added"] + report["updated"] + report["unchanged"] == files
    assert (report["removed"], report["moved"]) == (0, 0)  # done by the killed runs
    assert (chain.kills, chain.lost) == (len(UPDATE_CHAIN), 0)


@pytest.mark.slow
def test_kill_at_random_moments(zyg, photos, reference, tmp_path):
    """SIGKILL after a random delay (seeded), whatever the run is doing at that moment."""
    index = tmp_path / "index"
    chain = Chain(index)
    rng = random.Random(1234)
    for _ in range(5):
        run = zyg.start(["index", str(photos), "--index", str(index), "--json", *P.FAST])
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(run.pid, signal.SIGKILL)
        if zyg.wait(run) == 0:  # finished before the kill: nothing to check
            break
        chain.after_kill(run, "random")
    _finish(zyg, photos, index, reference)
    assert chain.lost == 0
    print(f"{chain.kills} kills at random moments survived")


def test_sigkill_leaves_no_decode_worker_alive(zyg, photos, tmp_path):
    """The OOM killer's SIGKILL gives `retrieval index` no chance to clean up: its decode
    workers must still exit on their own (they used to live on as orphans)."""
    index, flag = tmp_path / "index", tmp_path / "paused"
    argv = ["index", str(photos), "--index", str(index), *P.FAST[:-2], "--workers", "2"]
    run = zyg.start(argv, P.pause_env("batch-embedded:2", flag))
    workers: list[int] = []
    try:
        P.wait_for_file(flag, run, zyg)
        workers = P.workers_of(run.pid)
        assert len(workers) == 2
        os.kill(run.pid, signal.SIGKILL)
        assert zyg.wait(run) == -signal.SIGKILL
        P.assert_gone(workers)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(run.pid, signal.SIGKILL)
        for pid in P.workers_of(run.pid):
            os.kill(pid, signal.SIGKILL)


# -- Ctrl-C ------------------------------------------------------------------------------------


RESUME = "run the same command again to resume"


@pytest.mark.slow
def test_ctrl_c_keeps_finished_batches(photos, reference, zyg, tmp_path):
    """A terminal's Ctrl-C (SIGINT to the whole process group, decode worker included) in
    the third batch of `python -m retrieval index`: exit 130, the two finished batches are
    kept, a line says how to resume, no process is left behind, and the re-run completes."""
    index, flag = tmp_path / "index", tmp_path / "paused"
    env = {**os.environ, **P.pause_env("batch-embedded:3", flag), "OMP_NUM_THREADS": "1"}
    argv = ["index", str(photos), "--index", str(index), *P.FAST[:-2], "--workers", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrieval", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the run never reached its third batch"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == (
        f"retrieval: interrupted: kept 8 newly embedded images from finished batches; {RESUME}"
    )
    assert out == ""
    _no_process_left(proc.pid)
    assert len(P.verify(index)) == 8
    report = _finish(zyg, photos, index, reference)
    assert (report["added"], report["unchanged"]) == (N - 8, 8)


@pytest.mark.parametrize(
    "point, kept",
    [("scanned:1", 0), ("batch-committed:2", 8), ("write-synced/vectors.faiss:1", N)],
)
def test_ctrl_c_in_each_phase(zyg, photos, reference, tmp_path, point, kept):
    """SIGINT while scanning, between batches, and while writing vectors.faiss."""
    index, flag = tmp_path / "index", tmp_path / "paused"
    argv = ["index", str(photos), "--index", str(index), "--json", *P.FAST]
    run = zyg.start(argv, P.pause_env(point, flag))
    P.wait_for_file(flag, run, zyg)
    os.kill(run.pid, signal.SIGINT)
    assert zyg.wait(run) == 130, run.stderr
    last = run.stderr.splitlines()[-1]
    assert last.startswith("retrieval: interrupted") and last.endswith(RESUME), last
    assert "Traceback" not in run.stderr
    assert P.temps(index) == []  # an interrupted atomic write removes its temporary file
    assert len(P.verify(index)) == kept
    report = _finish(zyg, photos, index, reference)
    assert (report["added"], report["unchanged"]) == (N - kept, kept)


def _no_process_left(group: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, "processes of the interrupted run are still alive"
        time.sleep(0.05)
