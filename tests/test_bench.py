"""`retrieval bench` and `run_bench`: every stage measured, reported as text and JSON; the
generated images; start-up time of the CLI."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SUITE_PRECISION, make_photos, run_cli
from PIL import Image

from retrieval.ops.bench import BenchOptions, run_bench
from retrieval.sources import synthetic as bench_images

TINY_BENCH = BenchOptions(
    model="test_resnet",
    device="cpu",
    batch_size=4,
    images=6,
    mix="small",
    rounds=2,
    plain=False,  # a `retrieval index` process per round: test_bench_limit runs it once
    search_size=200,
)


@pytest.mark.precision
def test_run_bench_measures_every_stage() -> None:
    notices: list[str] = []
    report = run_bench(None, TINY_BENCH, notices.append)
    assert set(report.stages) == {
        *("decode", "decode_serial", "model", "model_1thread", "end_to_end"),
    }
    for stage in report.stages.values():
        assert len(stage.seconds) == 2 and stage.images_per_second > 0 and stage.peak_rss > 0
    assert report.stages["end_to_end"].images == report.stages["decode"].images == 6
    assert report.stages["model"].images == 6
    assert report.settings == {
        "model": "test_resnet",
        "device": "cpu",
        "precision": SUITE_PRECISION,
        "batch_size": 4,
        "workers": report.settings["workers"],
        "threads": report.settings["threads"],
        "rounds": 2,
    }
    assert report.corpus["files"] == 6 and report.corpus["source"] == "generated, mix small"
    assert report.corpus["largest_jpeg_ms"]["draft"] > 0
    assert set(report.search) == {
        *("vectors", "query_megapixels", "embed", "load", "search", "total", "warm")
    }
    assert report.search["vectors"] == 200
    data = report.to_dict()
    assert set(data["ratios"]) == {"end_to_end_vs_model"}
    assert 0 < data["limit"]["end_to_end_share"]
    assert data["machine"]["cpus"] >= 1 and "torch" in data["machine"]
    assert notices[0].startswith("making 6 small images in ")
    text = "\n".join(report.lines())
    assert text.startswith("end-to-end ") and "of this machine's limit" in text
    assert "end-to-end / model: " in text and "search: " in text


def test_cli_bench_on_a_folder_json(tmp_path: Path) -> None:
    make_photos(tmp_path / "photos", range(5))
    result = run_cli(
        "bench",
        tmp_path / "photos",
        *("--model", "test_resnet", "--images", "3", "--rounds", "1", "--workers", "0"),
        *("--no-plain", "--search-size", "0", "--json"),
    )
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert set(data["stages"]) == {
        *("decode", "decode_serial", "model", "model_1thread", "end_to_end"),
    }
    assert data["stages"]["end_to_end"]["images"] == 3  # --images caps the folder
    assert data["settings"]["workers"] == 0
    assert data["search"] == {} and set(data["ratios"]) == {"end_to_end_vs_model"}
    assert result.stderr == ""  # --json: no notices


def test_cli_bench_on_a_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here\n")
    result = run_cli("bench", tmp_path, "--model", "test_resnet")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: no images found under {tmp_path}; point bench at a folder of images\n"
    )


def test_generated_images_follow_the_mix(tmp_path: Path) -> None:
    paths = bench_images.make_images(tmp_path, 5, "small", seed=1)
    again = bench_images.make_images(tmp_path / "again", 5, "small", seed=1)
    assert [Path(p).read_bytes() for p in paths] == [Path(p).read_bytes() for p in again]
    for path, (width, height, fmt) in zip(paths, bench_images.SMALL_MIX * 2, strict=False):
        with Image.open(path) as image:
            assert (image.size, image.format) == ((width, height), fmt)


def test_cli_help_starts_fast() -> None:
    """`retrieval --help` imports no torch, timm or FAISS (about 0.1 s here; the bound
    leaves room for a busy machine)."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "retrieval", "--help"], capture_output=True, text=True
        )
        times.append(time.perf_counter() - started)
        assert done.returncode == 0 and "bench" in done.stdout
    assert statistics.median(times) < 1.5, times
    probe = "import sys, retrieval.cli; print(sorted({'torch','timm','faiss'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("rounds", ["0", "-1"])
def test_bad_rounds_exit_2(rounds: str) -> None:
    result = run_cli("bench", "--rounds", rounds)
    assert result.exit_code == 2
    assert f"Invalid value for '--rounds': {rounds} is not in the range x>=1." in result.stderr
