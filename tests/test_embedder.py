"""The embedder: (n, H, W, 3) uint8 in, (n, dim) unit float32 out, equal to timm's pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_DIM, draw_image, save_image
from PIL import Image

from retrieval.embedding.embedder import (
    cpu_has_native_bf16,
    resolve_device,
    resolve_precision,
)
from retrieval.errors import UsageError
from retrieval.sources.decode import load_file


def batch(tiny_embedder, seeds) -> np.ndarray:
    p = tiny_embedder.preprocess
    rng = np.random.default_rng(0)
    images = [draw_image(s, (p.width, p.height)) for s in seeds[:-1]]
    noise = rng.integers(0, 256, (p.height, p.width, 3), np.uint8)
    return np.stack([np.asarray(i) for i in images] + [noise])


def test_shape_dtype_and_unit_norm(tiny_embedder) -> None:
    xb = tiny_embedder.embed(batch(tiny_embedder, [1, 2, 3, 4, 5]))
    assert xb.shape == (5, TINY_DIM) == (5, tiny_embedder.dim)
    assert xb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(xb, axis=1), 1.0, atol=1e-5)
    assert tiny_embedder.info.name == "test_resnet"
    assert tiny_embedder.describe() == "cpu, fp32"


def test_empty_batch_and_wrong_shape(tiny_embedder) -> None:
    p = tiny_embedder.preprocess
    empty = tiny_embedder.embed(np.zeros((0, p.height, p.width, 3), np.uint8))
    assert empty.shape == (0, TINY_DIM) and empty.dtype == np.float32
    with pytest.raises(ValueError, match=r"expected \(n, H, W, 3\) uint8 pixels"):
        tiny_embedder.embed(np.zeros((p.height, p.width, 3), np.uint8))


def test_a_vector_does_not_depend_on_its_batch(tiny_embedder) -> None:
    pixels = batch(tiny_embedder, [1, 2, 3])
    together = tiny_embedder.embed(pixels)
    alone = np.concatenate([tiny_embedder.embed(pixels[i : i + 1]) for i in range(len(pixels))])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_equals_timm_transform_and_model(tmp_path, tiny_embedder) -> None:
    """decode + embed == timm's eval transform + forward + L2 normalisation."""
    from timm.data import create_transform, resolve_model_data_config

    model = tiny_embedder.model
    transform = create_transform(**resolve_model_data_config(model))
    path = save_image(draw_image(21, (240, 180)), tmp_path / "a.png")
    with Image.open(path.decode()) as image:
        x = transform(image.convert("RGB"))[None]
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(x), dim=1).numpy()
    pixels = load_file(path, tiny_embedder.preprocess, 100.0).pixels
    ours = tiny_embedder.embed(pixels[None])
    np.testing.assert_allclose(ours, expected, atol=2e-3)
    assert float(ours[0] @ expected[0]) > 0.9999


def test_device_and_precision_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETRIEVAL_PRECISION")  # the suite pins it; here: the hardware's choice
    assert resolve_device("cpu") == "cpu"
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    with pytest.raises(UsageError) as info:
        resolve_precision("fp16", "cpu")
    assert str(info.value) == "--precision fp16 needs a GPU; on the CPU use bf16 or fp32"
    with pytest.raises(UsageError, match="unknown device 'tpu'; use one of auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu"
        with pytest.raises(UsageError) as info:
            resolve_device("cuda")
        assert str(info.value).startswith("--device cuda: torch ")
        assert str(info.value).endswith(
            "sees no CUDA GPU; check the driver (nvidia-smi) or use --device cpu"
        )
