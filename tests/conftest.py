"""Shared test helpers: drawn images, the CLI run in-process and as a subprocess, a tiny index.

Everything is made in temporary folders. The model is timm's `test_resnet` (96-d, 160 px),
untrained with the product's fixed seed, so no test needs a network or a GPU. Other test
files may use the fixtures below or import the plain functions (`draw_image`, `run_cli`, ...)
with `from conftest import ...`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageOps

# No test may reach the Hugging Face hub, whatever the machine's network.
os.environ["HF_HUB_OFFLINE"] = "1"
for _name in ("RETRIEVAL_INDEX", "RETRIEVAL_DEBUG", "HF_HUB_CACHE"):
    os.environ.pop(_name, None)
# No test may depend on the CPU it runs on: `--precision auto` would pick bf16 on CPUs with
# AVX-512-BF16/AMX and fp32 elsewhere. The suite pins fp32 (in the environment, so the CLI
# run as a subprocess gets it too); CI runs the `precision`-marked tests again with
# RETRIEVAL_PRECISION=bf16 (.ci/run).
os.environ.setdefault("RETRIEVAL_PRECISION", "fp32")
#: The precision `--precision auto` resolves to in this run of the suite.
SUITE_PRECISION = os.environ["RETRIEVAL_PRECISION"]

#: Options that make `retrieval index` build a tiny, untrained, single-process index.
TINY = ("--model", "test_resnet", "--no-pretrained", "--workers", "0", "--quiet")
TINY_DIM = 96


@pytest.fixture(autouse=True)
def _empty_hf_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point the Hugging Face cache at an empty folder: the user's cache never leaks in."""
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home-empty"))


# -- images ------------------------------------------------------------------------------------


def draw_image(seed: int, size: tuple[int, int] = (128, 96)) -> Image.Image:
    """A distinct RGB picture for each seed: striped gradient plus a few filled shapes.

    Different seeds differ in colours, stripe direction/frequency and shapes, which an
    untrained network still tells apart; flips and crops of one stay closest to it.
    """
    rng = random.Random(seed)
    w, h = size
    c0 = np.array([rng.randrange(256) for _ in range(3)], np.float64)
    c1 = np.array([rng.randrange(256) for _ in range(3)], np.float64)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = np.cos(angle) * xx / w + np.sin(angle) * yy / h
    t = (t - t.min()) / (np.ptp(t) or 1.0)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 6) * t)
    pixels = c0 * (1 - stripes[..., None]) + c1 * stripes[..., None]
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 6)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randint(w // 8, w // 2), y0 + rng.randint(h // 8, h // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        kind = rng.choice(["ellipse", "rectangle", "polygon"])
        if kind == "ellipse":
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        elif kind == "rectangle":
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            corners = [(x0, y0), (x1, y0 + rng.randint(0, h // 3)), (rng.randrange(w), y1)]
            draw.polygon(corners, fill=colour)
    return image


def save_image(image: Image.Image, path: str | os.PathLike[str] | bytes, **params) -> bytes:
    """Save `image` (format from the extension unless `format=` is given); returns the path
    as bytes. Parent folders are created."""
    raw = os.fsencode(path)
    os.makedirs(os.path.dirname(raw), exist_ok=True)
    fmt = params.pop("format", None)
    if fmt is None:
        ext = os.path.splitext(raw)[1].decode("ascii", "replace").lower()
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF"}.get(ext, ext[1:].upper())
    with open(raw, "wb") as fh:
        image.save(fh, fmt, **params)
    return raw


def make_photos(
    folder: Path, seeds: Sequence[int], size: tuple[int, int] = (128, 96)
) -> list[Path]:
    """Draw one image per seed into `folder` as photo_<seed>.jpg / .png (alternating)."""
    paths = []
    for n, seed in enumerate(seeds):
        path = folder / f"photo_{seed}.{'jpg' if n % 2 == 0 else 'png'}"
        save_image(draw_image(seed, size), path, **({"quality": 95} if n % 2 == 0 else {}))
        paths.append(path)
    return paths


def flipped(image: Image.Image) -> Image.Image:
    return ImageOps.mirror(image)


def cropped(image: Image.Image, fraction: float = 0.1) -> Image.Image:
    w, h = image.size
    dx, dy = int(w * fraction), int(h * fraction)
    return image.crop((dx, dy, w - dx, h - dy))


# -- running the CLI ---------------------------------------------------------------------------


@dataclass
class CliResult:
    """What one run of `retrieval` produced."""

    exit_code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = field(repr=False, default=b"")

    def json(self):
        return json.loads(self.stdout)


def run_cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> CliResult:
    """Run `retrieval.cli.main(args)` in this process, as the console script would.

    Uses click's CliRunner isolation, so error lines and exit codes come from `main()` itself
    (the code that maps exceptions to `error: ...` and exit 1/2/130).
    """
    from retrieval.cli import main

    argv = [os.fsdecode(a) if isinstance(a, bytes) else os.fspath(a) for a in args]
    runner = CliRunner()
    with runner.isolation(env=env) as (out, err, _):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        raw = out.getvalue()
        return CliResult(
            code, raw.decode("utf-8", "surrogateescape"), err.getvalue().decode("utf-8"), raw
        )


def run_module(
    *args: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python -m retrieval ARGS` in a fresh interpreter (text output, not checked)."""
    return subprocess.run(
        [sys.executable, "-m", "retrieval", *map(os.fspath, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


# -- models ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_embedder():
    """The untrained test_resnet embedder on the CPU in the suite's precision (what `TINY`
    indexes with: fp32 unless RETRIEVAL_PRECISION says otherwise)."""
    from retrieval.embedding.backbone import untrained
    from retrieval.embedding.embedder import load_embedder

    return load_embedder("test_resnet", untrained(), "cpu", SUITE_PRECISION)


# -- a shared index ----------------------------------------------------------------------------


@dataclass
class TinyIndex:
    """A test_resnet index over drawn photos, built once per session. Do not modify it."""

    directory: Path
    photos: Path  # the indexed folder
    originals: list[Path]  # indexed images, photo_<seed>
    broken: Path  # an indexed-but-failed file (garbage bytes named .jpg)
    queries: dict[str, Path]  # edited copies outside the indexed folder, by edit
    query_sources: dict[str, Path]  # the original each query was made from
    report: dict  # the `retrieval index --json` report of the build


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory: pytest.TempPathFactory) -> TinyIndex:
    root = tmp_path_factory.mktemp("tiny")
    photos = root / "photos"
    originals = make_photos(photos, range(4)) + make_photos(photos / "sub" / "deeper", range(4, 8))
    broken = photos / "sub" / "broken.jpg"
    broken.write_bytes(b"this is not a JPEG at all\n" * 10)
    (photos / "notes.txt").write_text("not an image, never reported\n")
    queries = {
        "flip": save_image(flipped(draw_image(2)), root / "queries" / "flip.jpg"),
        "crop": save_image(cropped(draw_image(5)), root / "queries" / "crop.png"),
    }
    directory = root / "index"
    result = run_cli("index", photos, "--index", directory, *TINY, "--json")
    assert result.exit_code == 0, result.stderr
    return TinyIndex(
        directory=directory,
        photos=photos,
        originals=originals,
        broken=broken,
        queries={k: Path(os.fsdecode(v)) for k, v in queries.items()},
        query_sources={"flip": originals[2], "crop": originals[5]},
        report=result.json(),
    )


@pytest.fixture(scope="module")
def exported(tiny_index, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"parquet": path, "npy": path}: `retrieval export` of the tiny index, both formats
    (import tests read and tamper with copies of them)."""
    out = tmp_path_factory.mktemp("exports")
    files = {"parquet": out / "all.parquet", "npy": out / "all.npy"}
    for fmt, path in files.items():
        result = run_cli("export", "--index", tiny_index.directory, "--format", fmt, "-o", path)
        assert result.exit_code == 0, result.stderr
    return files


# -- a Milvus server ---------------------------------------------------------------------------

# For the tests that ask for it: one per session, stopped at its end (tests/_milvus_server.py).
from _milvus_server import milvus_server  # noqa: E402, F401
