"""Decode workers belong to the caller: the library works from a script without a
`__main__` guard and from `python -c`; a crashing decoder costs one file; workers that cannot
start are an error; workers die with their parent; --workers is capped to the machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import assert_gone, workers_of
from conftest import SUITE_PRECISION, make_photos, run_cli

from retrieval.errors import WorkersUnavailable
from retrieval.ops import pipeline
from retrieval.specs import Preprocess

PREPROCESS = Preprocess(64, 64, 72, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
ROOT = Path(__file__).resolve().parent.parent

#: The README's library example, as a plain script: no `if __name__ == "__main__":` guard.
UNGUARDED = """
import sys
from retrieval import Index
from retrieval.embedding.backbone import untrained
from retrieval.ops.indexing import IndexOptions

index = Index(sys.argv[1], notify=print)
report = index.add(
    [sys.argv[2]], model="test_resnet", weights=untrained(),
    options=IndexOptions(workers=2, batch_size=4),
)
print("added", report.added, "failed", len(report.failed))
"""


def _python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize("how", ["script", "python -c"])
def test_the_library_works_from_a_script_without_a_main_guard(tmp_path: Path, how: str) -> None:
    """Spawned workers used to re-run such a script: an IndexBusy traceback per worker, every
    file recorded as a decoder crash, added=0, exit 0."""
    make_photos(tmp_path / "photos", range(20))
    script = tmp_path / "make_index.py"
    script.write_text(UNGUARDED)
    args = [str(tmp_path / "index"), str(tmp_path / "photos")]
    if how == "script":
        done = _python(str(script), *args, cwd=tmp_path)
    else:
        done = _python("-c", UNGUARDED, *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "added 20 failed 0"
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr


def test_a_crashing_decoder_costs_only_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed while decoding one file (fault injection in the worker) is replaced;
    the file is recorded as crashed, every other file decodes, in order."""
    photos = make_photos(tmp_path, range(13), size=(64, 48))
    paths = [os.fsencode(p) for p in photos]
    monkeypatch.setenv("RETRIEVAL_TEST_CRASH_ON", "photo_6.")
    got = list(pipeline.decode_stream(paths, PREPROCESS, 100.0, workers=2, chunk_size=4))
    assert [r.path for r in got] == paths
    assert [r.error for r in got if r.error] == ["the image decoder crashed on this file"]
    assert got[6].error and got[6].pixels is None
    assert all(r.pixels is not None for i, r in enumerate(got) if i != 6)


def test_workers_that_cannot_start_are_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a crash record for every file: an interpreter that cannot start (a broken
    PYTHONHOME) stops the run with WorkersUnavailable."""
    photos = make_photos(tmp_path, range(3), size=(64, 48))
    monkeypatch.setenv("PYTHONHOME", str(tmp_path / "no-python-here"))
    with pytest.raises(WorkersUnavailable) as info:
        list(pipeline.decode_stream([os.fsencode(p) for p in photos], PREPROCESS, 100.0, 2))
    assert str(info.value) == (
        "the decode workers could not start (it exited with status 1 at start); "
        "use --workers 0 to decode in this process"
    )


#: Decodes through WORKERS workers, prints the first result, then waits to be killed.
HOLDER = """
import os, sys, time
from retrieval.ops import pipeline
from retrieval.specs import Preprocess
workers, paths = int(sys.argv[1]), [os.fsencode(p) for p in sys.argv[2:]]
stream = pipeline.decode_stream(
    paths, Preprocess(64, 64, 72, "bicubic", (0.5,) * 3, (0.5,) * 3), 100.0, workers, chunk_size=1
)
next(stream)
print("decoding", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize(("asked", "files", "started"), [(2, 6, 2), (50, 3, 3)])
def test_workers_die_with_a_sigkilled_parent(
    tmp_path: Path, asked: int, files: int, started: int
) -> None:
    """SIGKILL (the OOM killer) leaves no orphan decoding forever; no more workers start
    than there are chunks to decode."""
    photos = make_photos(tmp_path / "photos", range(files), size=(64, 48))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(asked), *map(str, photos)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    workers: list[int] = []
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "decoding\n"
        workers = workers_of(holder.pid)
        assert len(workers) == started
        holder.kill()  # what the OOM killer does
        holder.wait(timeout=10)
        assert_gone(workers)
    finally:
        holder.kill()
        holder.wait()
        for pid in workers_of(holder.pid):
            os.kill(pid, signal.SIGKILL)


def test_workers_are_capped_to_the_machine(tmp_path: Path) -> None:
    cpus = pipeline.cpu_count()
    limit = pipeline.max_workers()
    assert limit == 2 * cpus
    assert pipeline.plan_resources("cpu", workers=1000).workers == limit
    assert pipeline.plan_resources("cpu", workers=1).workers == 1
    assert pipeline.workers_notice(1000) == (
        f"--workers 1000 capped to {limit}: this machine has {cpus} CPUs"
    )
    assert pipeline.workers_notice(limit) is None
    assert pipeline.workers_notice(None) is None
    make_photos(tmp_path / "photos", range(3))
    result = run_cli(
        "index", tmp_path / "photos", "--index", tmp_path / "index",
        "--model", "test_resnet", "--no-pretrained", "--workers", "1000", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.json()["added"] == 3
    assert result.stderr.splitlines() == [
        f"retrieval: --workers 1000 capped to {limit}: this machine has {cpus} CPUs",
        f"retrieval: embedding with test_resnet on cpu, {SUITE_PRECISION}",
    ]


def test_too_few_open_files_is_one_line_and_leaves_no_index(tmp_path: Path) -> None:
    """`ulimit -n` too low for the workers asked for: one line naming both ways out, and no
    half-made new index (it used to be `internal error: OSError ...` after the manifest).
    3 workers on 3 chunks under `ulimit -n 12` really fail to start without the check."""
    if pipeline.max_workers() < 3:
        pytest.skip("needs 2 CPUs, so that --workers 3 is not capped")
    make_photos(tmp_path / "photos", range(20))
    index = tmp_path / "index"
    command = (
        f"ulimit -n 12 && exec {sys.executable} -m retrieval index photos --index {index} "
        "--model test_resnet --no-pretrained --workers 3"
    )
    done = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [
        "error: cannot start 3 decode workers: this process may open only 12 files (ulimit -n); "
        "use fewer --workers or raise the limit (ulimit -n 4096)"
    ]
    assert not index.exists()
