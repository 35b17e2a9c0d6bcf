"""The cheaper decode (`decode_image` shortcuts: grey images resized as one channel, a large
image's crop window resampled alone, see `resize.CROP_FIRST_FROM`) leaves what the model sees
and the embeddings it makes as they were with RGB first and the whole image resized, then
cropped (shortcuts=False, the path before): per image, cosine >= 0.9999 on a real trained
network (lite0, fp32), at most one grey level on under 0.5% of the pixels; images too small
for the window come out bit-identical. Real photos upscaled to 0.24-39 MP with sensor noise:
PNG, WebP, TIFF, JPEG, odd aspect ratios, grey and transparent. ~60 s on a loaded 2-core CPU.
"""

from __future__ import annotations

import io
from pathlib import Path

import _weights
import numpy as np
import pytest
from PIL import Image

from retrieval.sources.decode import decode_image
from retrieval.sources.resize import CROP_FIRST_FROM
from retrieval.specs import Preprocess

lite0_source_file = _weights.lite0_source_file  # the session fixtures
lite0_weights = _weights.lite0_weights

PHOTOS = Path(__file__).parents[1] / "data" / "photos"
#: (source photo, width, height, format, mode): 0.24 to 39 MP, odd aspect ratios, grey (8 and
#: 16-bit), alpha.
CASES = (
    ("coffee.jpg", 600, 400, "PNG", "RGB"),
    ("chelsea.jpg", 1600, 1200, "JPEG", "RGB"),
    ("rocket.webp", 2048, 1536, "WEBP", "RGB"),
    ("astronaut.png", 3000, 2000, "TIFF", "RGB"),
    ("hubble_deep_field.jpg", 5000, 3000, "PNG", "RGB"),
    ("retina.jpg", 5000, 3000, "WEBP", "RGB"),
    ("clock_motion_blur.jpg", 4000, 3000, "JPEG", "RGB"),
    ("brick_wall.jpg", 9600, 1600, "PNG", "L"),
    ("camera.png", 1800, 5400, "TIFF", "RGB"),
    ("gravel.jpg", 8000, 400, "PNG", "RGB"),
    ("grass.jpg", 4000, 2600, "PNG", "RGBA"),
    ("astronaut.png", 7200, 5400, "JPEG", "RGB"),
    ("coffee.jpg", 3000, 2000, "JPEG", "L"),
    ("chelsea.jpg", 2400, 1600, "PNG", "I;16"),
)


def _photo(name: str, size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    """A data/photos picture upscaled to `size` with mild sensor noise (a camera's entropy);
    RGBA: an opaque centre fading to transparent borders; I;16: 16-bit grey."""
    with Image.open(PHOTOS / name) as source:
        base = source.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 4.0, (size[1], size[0], 3))
    pixels = np.clip(np.asarray(base, np.float32) + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode == "RGBA":
        y, x = np.ogrid[: size[1], : size[0]]
        edge = np.minimum(np.minimum(x, size[0] - 1 - x), np.minimum(y, size[1] - 1 - y))
        image.putalpha(Image.fromarray(np.clip(edge * 255 // 400, 0, 255).astype(np.uint8)))
        return image
    if mode == "I;16":
        return Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257)
    return image.convert(mode)


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    out = {}
    for seed, (name, width, height, fmt, mode) in enumerate(CASES):
        buffer = io.BytesIO()
        _photo(name, (width, height), mode, seed).save(buffer, fmt, quality=90)
        out[f"{width}x{height}.{mode}.{fmt}"] = buffer.getvalue()
    return out


@pytest.fixture(scope="module")
def lite0(lite0_weights: Path):
    from retrieval.embedding.backbone import from_file
    from retrieval.embedding.embedder import load_embedder

    return load_embedder(_weights.LITE0, from_file(lite0_weights), "cpu", "fp32")


def _pixels(files: dict[str, bytes], preprocess: Preprocess, shortcuts: bool) -> np.ndarray:
    return np.stack([decode_image(d, preprocess, shortcuts=shortcuts)[0] for d in files.values()])


def _crop_first(data: bytes, preprocess: Preprocess) -> bool:
    """Whether the window is resampled alone: the shorter side (after a JPEG's draft
    decoding) is at least CROP_FIRST_FROM times `resize`."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (preprocess.resize, preprocess.resize))
        return min(image.size) >= CROP_FIRST_FROM * preprocess.resize


def test_embeddings_are_unchanged_on_a_trained_network(files, lite0) -> None:
    preprocess = lite0.preprocess
    assert preprocess.resize == 256 and preprocess.interpolation == "bicubic"
    new = lite0.embed(_pixels(files, preprocess, True))
    old = lite0.embed(_pixels(files, preprocess, False))
    cosines = dict(zip(files, (new * old).sum(axis=1).round(6).tolist(), strict=True))
    assert min(cosines.values()) >= 0.9999, cosines
    # not by luck: different photos are far apart, so a wrong crop or colour would show
    sources = np.array([case[0] for case in CASES])
    assert float((old @ old.T)[sources[:, None] != sources[None, :]].max()) < 0.95


@pytest.mark.parametrize(
    "preprocess",
    [
        Preprocess(224, 224, 256, "bicubic", (0.5,) * 3, (0.5,) * 3),  # lite0
        Preprocess(224, 224, 235, "bicubic", (0.5,) * 3, (0.5,) * 3),  # resnet50
        Preprocess(288, 288, 320, "bilinear", (0.5,) * 3, (0.5,) * 3),
        Preprocess(32, 32, 32, "bicubic", (0.5,) * 3, (0.5,) * 3),  # extreme aspect: the box
    ],
    ids=["lite0", "resnet50", "bilinear-320", "tiny"],
)
def test_model_input_is_within_a_grey_level(files, preprocess: Preprocess) -> None:
    new = _pixels(files, preprocess, True).astype(np.int16)
    old = _pixels(files, preprocess, False).astype(np.int16)
    windowed = 0
    for i, (name, data) in enumerate(files.items()):
        diff = np.abs(new[i] - old[i])
        assert int(diff.max()) <= 1 and float((diff > 0).mean()) < 0.005, (name, diff.max())
        if _crop_first(data, preprocess):
            windowed += 1
        else:  # nothing changes where the cheaper path does not run
            assert not diff.any(), name
    assert windowed >= 4  # and it runs on the large ones
