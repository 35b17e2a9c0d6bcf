"""`retrieval bench`'s overlap limit (issue 12): the arithmetic on given numbers, the report's
fields and lines, the plain-loop baseline and the whole-process stage on a tiny corpus, the
PNG mix, and the GPU script's fail-fast path. Nothing here is timed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photos, run_cli
from PIL import Image

from retrieval.ops.bench_report import BenchReport, Stage, overlap_limit
from retrieval.sources import synthetic
from retrieval.sources.baseline import plain_decode

ROOT = Path(__file__).resolve().parent.parent


# -- the arithmetic -----------------------------------------------------------------------------


def test_cpu_limit_is_cores_over_the_summed_core_seconds() -> None:
    limit = overlap_limit(cores=2, decode_core_s=0.04, model_core_s=0.06, device="cpu")
    assert limit.images_per_second == pytest.approx(20.0)  # 2 / (0.04 + 0.06)
    assert limit.share(15.0) == pytest.approx(0.75)
    assert limit.bound == "cpu"


def test_one_core_limit() -> None:
    limit = overlap_limit(cores=1, decode_core_s=0.25, model_core_s=0.25, device="cpu")
    assert limit.images_per_second == pytest.approx(2.0)
    assert limit.share(2.0) == pytest.approx(1.0)


def test_cuda_limit_is_the_slower_of_the_cpu_and_the_gpu() -> None:
    # The host does decode (0.02 core-s) + feeding the GPU (0.005 core-s) on 16 cores: 640
    # img/s; the GPU embeds 500 img/s model-only: the GPU bounds.
    limit = overlap_limit(16, 0.02, 0.005, "cuda", model_images_per_second=500.0)
    assert limit.images_per_second == pytest.approx(500.0)
    assert limit.bound == "gpu"
    # With 2 cores the CPU bounds: 2 / 0.025 = 80 img/s.
    limit = overlap_limit(2, 0.02, 0.005, "cuda", model_images_per_second=500.0)
    assert limit.images_per_second == pytest.approx(80.0) and limit.bound == "cpu"


def test_limit_refuses_meaningless_input() -> None:
    with pytest.raises(ValueError):
        overlap_limit(cores=0, decode_core_s=0.1, model_core_s=0.1, device="cpu")
    zero = overlap_limit(cores=2, decode_core_s=0.0, model_core_s=0.0, device="cpu")
    assert zero.images_per_second == 0.0 and zero.share(10.0) is None


def test_stage_core_seconds_per_image_is_the_median_round_over_images() -> None:
    stage = Stage("model", 10, seconds=[1.0, 1.2, 1.1], cpu_seconds=[2.0, 2.4, 2.2])
    assert stage.core_seconds_per_image == pytest.approx(0.22)
    assert Stage("decode", 10, seconds=[1.0]).core_seconds_per_image is None


# -- the report ----------------------------------------------------------------------------------


def _report() -> BenchReport:
    stages = {
        "decode": Stage("decode", 10, seconds=[0.5]),
        "decode_serial": Stage("decode_serial", 10, seconds=[0.4], cpu_seconds=[0.4]),
        "model": Stage("model", 10, seconds=[0.3], cpu_seconds=[0.6]),
        "end_to_end": Stage("end_to_end", 10, seconds=[0.625], cpu_seconds=[1.0]),
        "plain": Stage("plain", 10, seconds=[1.0]),
        "index_process": Stage("index_process", 10, seconds=[0.8]),
    }
    machine = {"cpu": "Test CPU", "cpus": 2, "torch": "2.x", "native_bf16_cpu": True}
    settings = {
        "model": "resnet50",
        "device": "cpu",
        "precision": "bf16",
        "batch_size": 32,
        "workers": 1,
        "threads": 2,
        "rounds": 1,
    }
    corpus = {"source": "generated", "files": 10, "megapixels_mean": 2.3}
    limit = overlap_limit(2, 0.04, 0.06, "cpu")
    return BenchReport(machine, settings, corpus, stages, limit=limit)


def test_report_headline_is_the_share_of_the_limit() -> None:
    report = _report()
    lines = report.lines()
    assert lines[0] == (
        "end-to-end 16.0 img/s = 0.80 of this machine's limit 20.0 img/s "
        "(2 cores / (decode 40.0 + model 60.0 core-ms per image))"
    )
    assert lines[1] == (
        "end-to-end used 100.0 core-ms per image (decode + model alone: 100.0); "
        "it kept the 2 cores busy 0.80 of its time"
    )
    text = "\n".join(lines)
    assert "retrieval index (whole process) / plain loop: 1.25x" in text
    assert "end-to-end / plain loop: 1.60x" in text


def test_report_json_has_the_limit_and_the_ratios() -> None:
    data = _report().to_dict()
    assert data["limit"] == {
        "cores": 2,
        "decode_core_ms": 40.0,
        "model_core_ms": 60.0,
        "images_per_second": 20.0,
        "bound": "cpu",
        "end_to_end_share": 0.8,
        "end_to_end_core_ms": 100.0,
        "cores_busy": 0.8,
    }
    assert data["ratios"]["index_process_vs_plain"] == 1.25
    assert data["ratios"]["end_to_end_vs_plain"] == 1.6
    assert data["stages"]["model"]["core_ms_per_image"] == 60.0
    assert "core_ms_per_image" not in data["stages"]["decode"]


# -- bench on a tiny corpus ----------------------------------------------------------------------


@pytest.mark.precision
def test_cli_bench_reports_the_share_and_the_plain_loop(tmp_path: Path) -> None:
    make_photos(tmp_path / "photos", range(4))
    result = run_cli(
        "bench",
        tmp_path / "photos",
        *("--model", "test_resnet", "--device", "cpu", "--rounds", "1", "--batch-size", "2"),
        *("--workers", "0", "--search-size", "0", "--json"),
    )
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert set(data["stages"]) == {
        *("decode", "decode_serial", "model", "model_1thread", "end_to_end", "plain"),
        "index_process",
    }
    assert data["stages"]["plain"]["images"] == data["stages"]["index_process"]["images"] == 4
    limit = data["limit"]
    assert limit["cores"] == data["machine"]["cpus"] and limit["bound"] == "cpu"
    assert limit["decode_core_ms"] == data["stages"]["decode_serial"]["core_ms_per_image"] > 0
    # The model's cost is its 1-thread CPU time (threads spinning at barriers are not work).
    assert limit["model_core_ms"] == data["stages"]["model_1thread"]["core_ms_per_image"] > 0
    expected = limit["cores"] / (limit["decode_core_ms"] + limit["model_core_ms"]) * 1000
    assert limit["images_per_second"] == pytest.approx(expected, rel=0.01)
    e2e = data["stages"]["end_to_end"]["images_per_second"]
    share = e2e / limit["images_per_second"]
    assert limit["end_to_end_share"] == pytest.approx(share, rel=0.01, abs=0.001)
    assert {"index_process_vs_plain", "end_to_end_vs_plain"} <= set(data["ratios"])
    assert limit["end_to_end_core_ms"] > 0 and limit["cores_busy"] > 0


def test_plain_decode_squashes_to_the_model_size(tmp_path: Path) -> None:
    (path,) = make_photos(tmp_path, [3], size=(320, 200))
    pixels = plain_decode(os.fsencode(path), (224, 160))
    assert pixels is not None and pixels.shape == (160, 224, 3) and pixels.dtype == np.uint8
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    assert plain_decode(os.fsencode(tmp_path / "bad.jpg"), (224, 224)) is None


# -- the PNG mix ---------------------------------------------------------------------------------


def test_png_mix_is_reproducible_and_has_the_promised_sizes(tmp_path: Path) -> None:
    cycle = len(synthetic.PNG_MIX)
    paths = synthetic.make_images(tmp_path / "a", cycle, "png", seed=3)
    again = synthetic.make_images(tmp_path / "b", 4, "png", seed=3)  # the largest is 4th
    assert [Path(p).read_bytes() for p in paths[:4]] == [Path(p).read_bytes() for p in again]
    sizes = []
    for path, (width, height, fmt) in zip(paths, synthetic.PNG_MIX, strict=True):
        with Image.open(path) as image:
            assert (image.size, image.format) == ((width, height), "PNG") and fmt == "PNG"
        sizes.append(width * height / 1e6)
    assert max(sizes) == pytest.approx(5120 * 2880 / 1e6)
    assert 2.0 <= sum(sizes) / len(sizes) <= 2.6  # the mix: 2.3 MP mean
    assert sum(s < 0.5 for s in sizes) >= len(sizes) // 2  # clip art: most files, few pixels
    # Wallpapers are photo-like (about a byte per pixel or more, not a flat gradient).
    largest = max(paths, key=os.path.getsize)
    assert os.path.getsize(largest) > 5120 * 2880


def test_synthetic_module_command_line_takes_the_png_mix(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "retrieval.sources.synthetic", tmp_path, "--count", "3"]
        + ["--mix", "png", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(
        f"bench_{n:05d}_{w}x{h}.png" for n, (w, h, _) in enumerate(synthetic.PNG_MIX[:3])
    )


# -- the GPU script ------------------------------------------------------------------------------


def test_gpu_script_parses() -> None:
    done = subprocess.run(["bash", "-n", ROOT / "tests" / "gpu_bench.sh"], capture_output=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_gpu_script_stops_at_once_without_cuda(tmp_path: Path) -> None:
    """`--check-only` stops after the CUDA check: here (no GPU) with exit 3 and one line."""
    env = {**os.environ, "GPU_BENCH_PYTHON": sys.executable, "GPU_BENCH_WORK": str(tmp_path)}
    done = subprocess.run(
        ["bash", ROOT / "tests" / "gpu_bench.sh", "--check-only"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("gpu_bench: no CUDA device: ")


def test_gpu_script_checks_torch_after_the_driver(tmp_path: Path) -> None:
    """With a driver present (a stand-in `nvidia-smi` that succeeds) but a torch that sees no
    GPU, as here, the script stops at torch's check: exit 3 before making any image."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: stand-in'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GPU_BENCH_PYTHON": sys.executable,
        "GPU_BENCH_WORK": str(tmp_path / "work"),
        "CUDA_VISIBLE_DEVICES": "",  # a real GPU stays hidden from torch
    }
    done = subprocess.run(
        ["bash", ROOT / "tests" / "gpu_bench.sh"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "torch.cuda.is_available() is False" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "gpu_bench: no CUDA device: torch sees none (see the line above)"
    )
    assert not (tmp_path / "work" / "images").exists()
