"""`retrieval index --engine ray`: decoding and embedding on Ray, committing here.

Every Ray run is a `python -m retrieval` subprocess (Ray starts and stops with it), bounded by
a timeout; after each test no Ray process it started is left (`_ray_processes`). The Ray runs
are `slow` (Ray starts in ~5 s, each actor loads torch): CI still runs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import _procs as P
import _weights
import numpy as np
import pytest

pytest.importorskip("ray")

lite0_source_file = _weights.lite0_source_file  # the session fixtures
lite0_weights = _weights.lite0_weights

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "data" / "photos"
#: Options for a small, offline, deterministic index (fp32: pinned by conftest too).
MODEL = ["--model", "test_resnet", "--no-pretrained", "--precision", "fp32"]
#: Ray's long-lived processes (the per-node servers and agents; workers die with raylet).
RAY_SERVERS = (b"raylet", b"gcs_server", b"ray::DashboardAgent", b"ray::RuntimeEnvAgent")
TIMEOUT = 150
#: On Linux Ray replaces a loopback address (even `_node_ip_address="127.0.0.1"`) with the
#: machine's outward address unless this is set: the tests keep Ray on 127.0.0.1.
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _ray_processes() -> set[int]:
    """Pids of Ray's server processes on this machine (read from /proc)."""
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if any(server in cmdline for server in RAY_SERVERS):
            found.add(int(name))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ")[-1][:1] != b"Z"
    except OSError:
        return False


@pytest.fixture
def no_ray_left() -> Iterator[set[int]]:
    """Fails the test if a Ray server process started during it is still alive 10 s later
    (`leftovers` given back: pids the test itself may end and excuse, e.g. after SIGKILL)."""
    before = _ray_processes()
    excused: set[int] = set()
    yield excused
    deadline = time.monotonic() + 10
    left = {p for p in _ray_processes() - before if _alive(p)}
    while left - excused and time.monotonic() < deadline:
        time.sleep(0.2)
        left = {p for p in _ray_processes() - before if _alive(p)}
    for pid in left & excused:
        os.kill(pid, signal.SIGKILL)
    assert left - excused == set()


@contextlib.contextmanager
def _paused(argv: list[str], point: str, flag: Path) -> Iterator[subprocess.Popen[str]]:
    """Run `argv` in its own process group until it pauses at fault point `point` (it then
    creates `flag`); yields it, and kills the group on the way out if it still runs."""
    run = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **LOOPBACK, **P.pause_env(point, flag)},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not flag.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flag.exists(), run.communicate()[1]
        yield run
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()


def _index(
    photos: Path, index: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "retrieval", "index", str(photos), "--index", str(index)]
    return subprocess.run(
        [*argv, *MODEL, "--json", *extra],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **LOOPBACK, **(env or {})},
        start_new_session=True,
    )


def _rows(index: Path) -> dict[bytes, tuple[int, str, np.ndarray | None]]:
    return {
        path: (row.id, row.status, np.frombuffer(row.vector, np.float32) if row.vector else None)
        for path, row in P.rows(index).items()
    }


def _assert_same_rows(index: Path, reference: Path) -> None:
    """Same paths, ids and states as `reference`, vectors at cosine >= 0.9999."""
    got, want = _rows(index), _rows(reference)
    assert sorted(got) == sorted(want)
    assert {p: r[:2] for p, r in got.items()} == {p: r[:2] for p, r in want.items()}
    for path, (_, status, vector) in want.items():
        if status == "ok":
            assert float(got[path][2] @ vector) >= 0.9999, path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/photos plus two bad files: a JPEG cut short and a text file named .png."""
    folder = tmp_path_factory.mktemp("ray") / "photos"
    shutil.copytree(PHOTOS, folder)
    (folder / "truncated.jpg").write_bytes((PHOTOS / "coffee.jpg").read_bytes()[:2000])
    (folder / "not_an_image.png").write_bytes(b"hello, not a PNG\n" * 10)
    return folder


@pytest.fixture(scope="module")
def local(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = tmp_path_factory.mktemp("local") / "index"
    done = _index(photos, index, "--workers", "0")
    assert done.returncode == 0, done.stderr
    return index


def test_without_ray_the_engine_says_how_to_install_it(tmp_path: Path) -> None:
    blocked = (
        "import sys; sys.modules['ray'] = None; "  # `import ray` now raises ImportError
        "from retrieval.cli import main; main(sys.argv[1:])"
    )
    index = tmp_path / "index"
    argv = ["index", str(PHOTOS), "--index", str(index), *MODEL, "--engine", "ray"]
    done = subprocess.run(
        [sys.executable, "-c", blocked, *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: --engine ray needs Ray, which cannot be imported")
    assert lines[0].endswith(
        "install it: pip install 'retrieval[ray]' (or: pip install 'ray[client]>=2.40')"
    )
    assert not index.exists()  # refused before anything was written


def test_ray_options_need_the_ray_engine(tmp_path: Path) -> None:
    from conftest import run_cli

    result = run_cli("index", str(PHOTOS), "--index", str(tmp_path / "i"), "--actors", "2")
    assert result.exit_code == 2
    assert "--ray-address, --actors and --shards need --engine ray" in result.stderr


@pytest.mark.parametrize(
    ("raised", "reason"),
    [
        ("task", "ValueError: bad pixels"),  # a task's own exception, not Ray's wrapper
        ("actor", "The actor died unexpectedly before finishing this task."),
    ],
)
def test_a_ray_failure_is_one_engine_failed_line(
    raised: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    from retrieval import EngineFailed
    from retrieval.engines import ray_engine

    error = (
        ray.exceptions.RayTaskError("embed", "Traceback ...", ValueError("bad pixels\nat 3"))
        if raised == "task"
        else ray.exceptions.ActorDiedError()
    )

    def failing_get(refs: object) -> object:
        raise error

    monkeypatch.setattr(ray, "get", failing_get)
    with pytest.raises(EngineFailed) as failed:
        ray_engine._get([])
    assert str(failed.value) == (
        f"the Ray run failed ({reason}); the batches committed before it are kept: run the "
        "same command again to resume"
    )


@pytest.mark.slow
def test_ray_run_equals_a_local_run(photos: Path, local: Path, tmp_path: Path, no_ray_left):
    index = tmp_path / "index"
    done = _index(photos, index, "--engine", "ray", "--batch-size", "4")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert (got["added"], len(got["failed"])) == (11, 2)
    assert sorted(f["path"].rsplit("/", 1)[1] for f in got["failed"]) == [
        "not_an_image.png",
        "truncated.jpg",
    ]
    assert "ray: decoded on 1 node(s), embedded by 1 cpu actor(s) on 1 node(s)" in done.stderr
    _assert_same_rows(index, local)


@pytest.mark.slow
def test_a_new_index_records_the_model_the_actor_loaded(
    lite0_weights: Path, tmp_path: Path, no_ray_left
) -> None:
    """The driver never loads the model of a new index: the actor loads it (real ImageNet
    weights from a file) and describes it; the manifest and the vectors are the local
    engine's for the same weights."""
    weights = ["--model", _weights.LITE0, "--weights", str(lite0_weights), "--precision", "fp32"]
    # the ray run's driver cannot import torch (Ray's workers are other processes: they can)
    no_torch = "import sys; sys.modules['torch'] = None; from retrieval.cli import main; main()"
    runs = {}
    for engine in ("local", "ray"):
        index = tmp_path / engine
        driver = ["-c", no_torch] if engine == "ray" else ["-m", "retrieval"]
        argv = [sys.executable, *driver, "index", str(PHOTOS), "--index", str(index)]
        done = subprocess.run(
            [*argv, *weights, "--engine", engine, "--workers", "0", "--json"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={**os.environ, **LOOPBACK},
        )
        assert done.returncode == 0, done.stderr
        runs[engine] = index
    assert "embedding with tf_efficientnet_lite0 on ray (1 cpu actor), fp32" in done.stderr
    manifests = {k: json.loads((v / "manifest.json").read_text()) for k, v in runs.items()}
    assert manifests["ray"]["model"] == manifests["local"]["model"]  # weights' SHA-256 too
    assert manifests["ray"]["precision"] == "fp32"
    _assert_same_rows(runs["ray"], runs["local"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "env", "message"),
    [
        (["--model", "not_a_model"], {}, "error: unknown model 'not_a_model'"),
        (
            ["--model", "resnet18"],
            {"HF_HUB_OFFLINE": "1"},
            "error: pretrained weights for resnet18 are not in the Hugging Face cache",
        ),
    ],
    ids=["unknown-model", "weights-unavailable"],
)
def test_a_model_the_actor_cannot_load_is_one_line_and_no_index(
    model: list[str], env: dict[str, str], message: str, tmp_path: Path, no_ray_left
) -> None:
    """The actor's error (pickled, whatever its constructor takes) is the run's one line,
    raised before the index is created; Ray is shut down."""
    index = tmp_path / "index"
    argv = [sys.executable, "-m", "retrieval", "index", str(PHOTOS), "--index", str(index)]
    done = subprocess.run(
        [*argv, *model, "--engine", "ray"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **LOOPBACK, **env},
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert not index.exists()


@pytest.mark.slow
def test_an_actor_that_keeps_dying_fails_the_run_in_one_line_and_the_rerun_finishes(
    photos: Path, local: Path, tmp_path: Path, no_ray_left
) -> None:
    """Each actor process is SIGKILLed on its first call: Ray restarts it and re-sends the
    call `ACTOR_RESTARTS` times, then the run ends with one error line (after Ray's own
    reports of the deaths), nothing on stdout; the same command without the fault finishes."""
    index = tmp_path / "index"
    failed = _index(photos, index, "--engine", "ray", env=P.kill_env("actor-embed:1"))
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout == ""
    assert failed.stderr.strip().splitlines()[-1] == (
        "error: the Ray run failed (The actor died unexpectedly before finishing this task.); "
        "the batches committed before it are kept: run the same command again to resume"
    )
    assert "Task _Embedder.embed failed" in failed.stderr  # Ray re-sent the calls
    resumed = _index(photos, index, "--engine", "ray")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_rows(index, local)


@pytest.mark.slow
def test_a_file_that_crashes_the_decoder_is_recorded_and_the_run_goes_on(
    photos: Path, local: Path, tmp_path: Path, no_ray_left
) -> None:
    """A decode task whose worker dies on every try (the test decoder kills its process on
    coffee.jpg) is redone one file a task: that file is recorded as crashed, as the local
    engine does, and the rest of its batch is embedded."""
    index = tmp_path / "index"
    done = _index(photos, index, "--engine", "ray", env={"RETRIEVAL_TEST_CRASH_ON": "coffee."})
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["added"] == 10
    crashed = [f for f in got["failed"] if f["path"].endswith("/coffee.jpg")]
    assert crashed == [
        {"path": str(photos / "coffee.jpg"), "error": "the image decoder crashed on this file"}
    ]
    rows, want = _rows(index), _rows(local)
    for path, (_, status, vector) in rows.items():
        if status == "ok":
            assert float(vector @ want[path][2]) >= 0.9999, path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--actors", str(2 * (os.cpu_count() or 1))],
            f"error: --actors {2 * (os.cpu_count() or 1)}: ",
        ),
        (
            ["--device", "cuda"],
            "error: --device cuda: the Ray cluster has no GPU; use --device auto",
        ),
    ],
    ids=["actors-leave-no-cpu", "cuda-without-gpu"],
)
def test_what_the_cluster_cannot_run_is_one_line_and_no_index(
    extra: list[str], message: str, tmp_path: Path, no_ray_left
) -> None:
    """Twice as many half-CPU actors as this machine has CPUs would leave the decode tasks
    no CPU (Ray would wait for ever); GPU actors on a cluster without GPUs could never start
    (the tests run where no GPU is lent). Both are refused in one line, before the index is
    created."""
    if "cuda" in extra and os.path.exists("/dev/nvidiactl"):
        pytest.skip("this machine has a GPU: Ray gives its cluster one")
    index = tmp_path / "index"
    done = _index(PHOTOS, index, "--engine", "ray", *extra)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert not index.exists()


@pytest.mark.parametrize(
    ("actors", "device", "gpus", "cpus", "decode"),
    [
        (1, "cpu", 0, 2, 0.75),  # two decode tasks beside the actor, as the local engine
        (1, "cpu", 0, 1, 0.5),  # a 1-CPU machine: the rest of the one CPU
        (3, "cpu", 0, 2, 0.5),
        (2, "cuda", 2, 16, 1.0),
        (4, "cpu", 0, 2, None),  # nothing left to decode
        (3, "cuda", 2, 16, None),  # more GPU actors than GPUs
        (2, "cuda", 2, 2, None),  # the GPU actors take every CPU
    ],
)
def test_decode_tasks_get_what_the_actors_leave(
    actors: int, device: str, gpus: int, cpus: float, decode: float | None
) -> None:
    from retrieval import UsageError
    from retrieval.engines.ray_engine import _decode_cpus

    if decode is None:
        with pytest.raises(UsageError, match=f"^--actors {actors}: "):
            _decode_cpus(actors, device, gpus, cpus)
    else:
        assert _decode_cpus(actors, device, gpus, cpus) == decode


def test_off_the_scanning_machine_a_file_is_checked_by_inode_only(tmp_path: Path) -> None:
    """A shared filesystem has other device numbers on other machines: there the read
    rule compares st_ino only, so the scanned file is read and another file is refused."""
    from retrieval.engines.ray_engine import decode_items
    from retrieval.specs import Preprocess

    image = P.make_images(tmp_path, 1)[0]
    st = image.stat()
    preprocess = Preprocess(32, 32, 36, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    path = os.fsencode(image)

    def errors(device: int, inode: int, here: bool) -> list[str | None]:
        results, _ = decode_items([(path, False, device, inode)], preprocess, 10.0, here)
        return [r.error for r in results]

    assert errors(st.st_dev, st.st_ino, here=True) == [None]
    assert errors(st.st_dev + 1, st.st_ino, here=False) == [None]  # another machine's mount
    assert errors(st.st_dev + 1, st.st_ino, here=True)[0].startswith("the file changed")
    assert errors(st.st_dev, st.st_ino + 1, here=False)[0].startswith("the file changed")


@pytest.mark.slow
def test_a_killed_driver_keeps_its_batches_and_the_rerun_finishes(
    photos: Path, local: Path, tmp_path: Path, no_ray_left
) -> None:
    index = tmp_path / "index"
    killed = _index(
        photos, index, "--engine", "ray", "--batch-size", "4", env=P.kill_env("batch-committed:2")
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    kept = _rows(index)
    assert [r[1] for r in kept.values()].count("ok") == 8  # two batches of 4, then killed
    # Ray's agents outlive a SIGKILLed driver by up to ~2 minutes (they exit once they see
    # raylet gone), and so does a worker raylet was starting as it died (~30 s); raylet and
    # GCS die with it. The killed run's processes are excused and ended here.
    killed_session = os.path.basename(os.path.realpath("/tmp/ray/session_latest")).encode()
    no_ray_left.update(p for p in _ray_processes() if _is_agent(p))
    resumed = _index(photos, index, "--engine", "ray", "--batch-size", "4")
    no_ray_left.update(p for p in _ray_processes() if killed_session in _cmdline(p))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["added"] == 3  # only the rest: the 8 kept are unchanged
    # an existing index's model, as its actor loaded it, is announced as a new one's is
    assert "embedding with test_resnet on ray (1 cpu actor), fp32" in resumed.stderr
    assert {p: r[:2] for p, r in _rows(index).items() if p in kept} == {
        p: r[:2] for p, r in kept.items()
    }
    _assert_same_rows(index, local)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _is_agent(pid: int) -> bool:
    return b"Agent" in _cmdline(pid)


@pytest.mark.slow
def test_a_three_node_cluster_spreads_the_work_and_losing_a_node_loses_nothing(
    tmp_path: Path, no_ray_left, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray's own tests simulate a cluster on one machine with `ray.cluster_utils.Cluster`:
    a head and two worker nodes, loopback only. The run is paused after its
    second commit, one worker node is removed (its processes killed), and the run goes on:
    Ray redoes the lost work, and every file is committed exactly once."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # LOOPBACK, in-process
    for name, value in LOOPBACK.items():
        monkeypatch.setenv(name, value)
    signal.alarm(2 * TIMEOUT)  # the cluster's own start and stop are bounded too
    photos = tmp_path / "photos"
    P.make_images(photos, 160)  # 40 batches of 4, twice the engine's window on 6 CPUs
    reference = tmp_path / "reference"
    assert _index(photos, reference, "--workers", "0").returncode == 0
    # 2 CPUs a node: an actor takes 0.5, and decode tasks 0.75 each beside it
    node = {"num_cpus": 2, "node_ip_address": "127.0.0.1", "object_store_memory": 80 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        workers = [cluster.add_node(**node) for _ in range(2)]
        cluster.wait_for_nodes()
        flag, index = tmp_path / "paused", tmp_path / "index"
        argv = [sys.executable, "-m", "retrieval", "index", str(photos), "--index", str(index)]
        argv += [*MODEL, "--json", "--engine", "ray", "--ray-address", cluster.address]
        with _paused(
            [*argv, "--actors", "2", "--batch-size", "4"], "batch-committed:2", flag
        ) as run:
            cluster.remove_node(workers[0])
            flag.unlink()
            out, err = run.communicate(timeout=TIMEOUT)
        assert run.returncode == 0, err
        assert json.loads(out or "{}").get("added") == 160, (out, err)
        decoded_on = int(err.split("ray: decoded on ")[1].split(" ")[0])
        assert decoded_on > 1, err
        _assert_same_rows(index, reference)  # exactly once: same ids, no row lost or doubled
    finally:
        cluster.shutdown()
        signal.alarm(0)


@pytest.mark.slow
def test_shards_hold_what_the_catalogue_would(
    photos: Path, local: Path, tmp_path: Path, no_ray_left
) -> None:
    """--shards DIR: the embedded files go to DIR in the clip-retrieval layout, not into the
    index; `retrieval import DIR` elsewhere gives the local engine's vectors."""
    index, shards, imported = tmp_path / "index", tmp_path / "shards", tmp_path / "imported"
    done = _index(photos, index, "--engine", "ray", "--shards", str(shards))
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert (got["added"], len(got["failed"])) == (11, 2)
    assert sorted(os.listdir(shards)) == ["img_emb", "manifest.json", "metadata"]
    assert [r for r in P.rows(index).values() if r.status == "ok"] == []  # none committed here
    load = subprocess.run(
        [sys.executable, "-m", "retrieval", "import", str(shards), "--index", str(imported)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert load.returncode == 0, load.stderr
    shipped, want = P.vectors_by_path(imported), P.vectors_by_path(local)
    assert sorted(shipped) == sorted(want)
    for path, vector in want.items():
        assert float(shipped[path] @ vector) >= 0.9999, path


@pytest.mark.slow
def test_ctrl_c_keeps_finished_batches_and_shuts_ray_down(
    photos: Path, tmp_path: Path, no_ray_left
) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) after the first
    commit: the run says what it kept, exits 130, and leaves no Ray process behind."""
    index, flag = tmp_path / "index", tmp_path / "paused"
    argv = [sys.executable, "-m", "retrieval", "index", str(photos), "--index", str(index)]
    argv += [*MODEL, "--engine", "ray", "--batch-size", "4", "-q"]
    with _paused(argv, "batch-committed:1", flag) as run:
        os.killpg(run.pid, signal.SIGINT)
        _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "interrupted: kept 4 newly embedded images from finished batches" in err
    assert [r.status for r in P.rows(index).values()].count("ok") == 4
