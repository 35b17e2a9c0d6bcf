"""The decode pipeline: worker processes give exactly what in-process decoding gives, in
order; resource defaults; JPEG draft decoding; the GPU JPEG decoder's CPU fallback."""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import draw_image, make_photos, save_image
from PIL import Image

from retrieval.ops import pipeline
from retrieval.ops.bench import naive_decode
from retrieval.sources.decode import decode_image
from retrieval.specs import Preprocess

PREPROCESS = Preprocess(64, 64, 72, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_workers_give_the_in_process_results_in_order(tmp_path: Path) -> None:
    photos = make_photos(tmp_path, range(11), size=(96, 80))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    paths = [os.fsencode(p) for p in photos[:5] + [broken] + photos[5:]]
    expected = list(pipeline.decode_stream(paths, PREPROCESS, 100.0, workers=0))
    got = list(pipeline.decode_stream(paths, PREPROCESS, 100.0, workers=2, chunk_size=3))
    assert [r.path for r in got] == paths
    for a, b in zip(got, expected, strict=True):
        assert (a.size, a.content_hash, a.width, a.height, a.format, a.error) == (
            b.size,
            b.content_hash,
            b.width,
            b.height,
            b.format,
            b.error,
        )
        assert (a.pixels is None and b.pixels is None) or np.array_equal(a.pixels, b.pixels)
    assert got[5].pixels is None and got[5].error.startswith("not a supported image")


# (cpus, device) -> (workers, threads) that `plan_resources` must give, from its docstring:
# CPU: a quarter of the cores decode (at least 1), the rest run the model, and below 4 cores
# the model keeps them all; CUDA: every core but one decodes, the model gets 2 threads. The
# worker cap is MAX_WORKERS (32 when written: see the large machines).
PLANS = [
    (1, "cpu", 1, 1),
    (2, "cpu", 1, 2),
    (3, "cpu", 1, 3),
    (4, "cpu", 1, 3),
    (8, "cpu", 2, 6),
    (16, "cpu", 4, 12),
    (64, "cpu", 16, 48),
    (128, "cpu", 32, 96),
    (256, "cpu", 32, 224),
    (1, "cuda", 1, 1),
    (2, "cuda", 1, 2),
    (8, "cuda", 7, 2),
    (64, "cuda", 32, 2),
]


@pytest.mark.parametrize(("cpus", "device", "workers", "threads"), PLANS)
def test_resource_plan_for_each_machine_size(
    monkeypatch: pytest.MonkeyPatch, cpus: int, device: str, workers: int, threads: int
) -> None:
    """The machine (its CPU count) is the environment here: it is set, the plan is checked."""
    assert pipeline.MAX_WORKERS == 32
    monkeypatch.setattr(pipeline, "cpu_count", lambda: cpus)
    assert pipeline.plan_resources(device) == pipeline.Resources(workers, threads)
    if device == "cpu":
        assert pipeline.default_workers() == workers


def test_explicit_resources_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "cpu_count", lambda: 8)
    assert pipeline.plan_resources("cpu", workers=0, threads=3) == pipeline.Resources(0, 3)
    assert pipeline.plan_resources("cuda", workers=5) == pipeline.Resources(5, 2)
    assert pipeline.plan_resources("cpu", threads=0) == pipeline.Resources(2, 1)  # at least 1
    assert pipeline.plan_resources("cpu", workers=100).workers == 16  # capped: 2 per CPU


def test_batch_size_defaults() -> None:
    assert pipeline.default_batch_size("cpu") == 32
    assert pipeline.default_batch_size("cuda") == 256
    assert pipeline.default_batch_size("mps") == 32  # unknown devices get the CPU's


def test_jpeg_draft_decoding_matches_a_full_decode(tmp_path: Path) -> None:
    """A 12 MP JPEG decoded at 1/8 scale (libjpeg DCT scaling) then resized gives the same
    picture as decoding every pixel: mean difference under 2 of 255 levels."""
    path = tmp_path / "big.jpg"
    draw_image(7, (160, 120)).resize((4000, 3000), Image.Resampling.BILINEAR).save(path, quality=90)
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:  # the draft engages at this size
        assert image.draft("RGB", (PREPROCESS.resize, PREPROCESS.resize))[1][2:] == (500, 375)
    drafted, width, height, fmt = decode_image(data, PREPROCESS)
    full = naive_decode(os.fsencode(path), PREPROCESS)
    assert (width, height, fmt) == (4000, 3000, "JPEG")
    assert drafted.shape == full.shape == (64, 64, 3)
    assert np.abs(drafted.astype(int) - full).mean() < 2.0


def test_gpu_jpeg_decoder_matches_pillow_on_the_cpu(tmp_path: Path) -> None:
    """torchvision's decode path (nvJPEG on CUDA) run on the CPU: same crop, close pixels."""
    from retrieval.embedding.jpeg_gpu import decode_jpegs

    paths = [
        save_image(draw_image(seed, size), tmp_path / f"{seed}.jpg", quality=95)
        for seed, size in [(1, (200, 120)), (2, (90, 150)), (3, (64, 64))]
    ]
    datas = [Path(os.fsdecode(p)).read_bytes() for p in paths]
    got = decode_jpegs(datas, PREPROCESS, "cpu").numpy()
    expected = np.stack([decode_image(d, PREPROCESS)[0] for d in datas])
    assert got.shape == expected.shape == (3, 64, 64, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected).mean() < 3.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_embeddings_match_the_cpu(tiny_embedder) -> None:
    """Pinned staging buffer + non-blocking copy, reused across batches of several sizes."""
    from retrieval.embedding.embedder import Embedder

    cuda = Embedder(copy.deepcopy(tiny_embedder.model), tiny_embedder.info, "cuda", "fp32")
    p = tiny_embedder.preprocess
    pixels = np.stack([np.asarray(draw_image(s, (p.width, p.height))) for s in range(6)])
    for n in (6, 2, 5):
        np.testing.assert_allclose(
            cuda.embed(pixels[:n]), tiny_embedder.embed(pixels[:n]), atol=2e-3
        )
