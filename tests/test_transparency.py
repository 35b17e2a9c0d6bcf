"""Transparent images keep what a person sees: the visible content survives compositing
whether it is light or dark on transparency (a white logo on transparency used to become a
blank white square, and every such logo scored 1.000 against every other)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run_cli
from PIL import Image, ImageDraw

from retrieval import defaults
from retrieval.sources.decode import decode_image
from retrieval.specs import Preprocess

#: 64 x 64 pixels as they are: no resize, the whole image is the crop.
SAME = Preprocess(64, 64, 64, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def logo(shape: str, colour: tuple[int, int, int], mode: str = "RGBA", size: int = 64) -> bytes:
    """A PNG of one filled shape in `colour` on full transparency (anti-aliased edges)."""
    big = Image.new("RGBA", (size * 4, size * 4), (*colour, 0))
    draw = ImageDraw.Draw(big)
    box = (size // 2, size // 2, size * 7 // 2, size * 7 // 2)
    if shape == "circle":
        draw.ellipse(box, fill=(*colour, 255))
    elif shape == "triangle":
        draw.polygon([(box[0], box[3]), (box[2], box[3]), (size * 2, box[1])], fill=(*colour, 255))
    else:  # a bar across the top
        draw.rectangle((box[0], box[1], box[2], size * 3 // 2), fill=(*colour, 255))
    image = big.resize((size, size), Image.Resampling.LANCZOS)  # soft alpha at the edges
    if mode == "LA":
        image = image.convert("LA")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def blank(colour: tuple[int, int, int], alpha: int = 255) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (64, 64), (*colour, alpha)).save(buffer, "PNG")
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return decode_image(data, SAME)[0].astype(np.int16)


BLANKS = {
    "opaque white": blank(WHITE),
    "opaque black": blank(BLACK),
    "fully transparent": blank(WHITE, 0),
}
LOGOS = [
    (shape, colour, mode)
    for shape in ("circle", "triangle", "bar")
    for colour in (WHITE, BLACK)
    for mode in ("RGBA", "LA")
]


@pytest.mark.parametrize(("shape", "colour", "mode"), LOGOS)
def test_a_logo_on_transparency_does_not_composite_to_a_blank_image(shape, colour, mode) -> None:
    composited = pixels(logo(shape, colour, mode))
    for name, data in BLANKS.items():
        differing = np.abs(composited - pixels(data)).max(axis=2) > 128
        # the shape covers 12-47% of the image; at least 10% must stand out from a blank
        assert differing.mean() > 0.10, (shape, colour, mode, name)
    # and the shape's own pixels contrast with its background
    assert composited.max() - composited.min() > 200


@pytest.mark.parametrize("colour", [WHITE, BLACK])
def test_different_logos_of_one_colour_composite_differently(colour) -> None:
    shapes = ["circle", "triangle", "bar"]
    composited = {shape: pixels(logo(shape, colour)) for shape in shapes}
    for i, a in enumerate(shapes):
        for b in shapes[i + 1 :]:
            assert (np.abs(composited[a] - composited[b]).max(axis=2) > 128).mean() > 0.05, (a, b)


def test_the_background_rule_is_deterministic_and_keeps_opaque_images() -> None:
    data = logo("circle", WHITE)
    assert np.array_equal(pixels(data), pixels(data))
    # light content goes on the dark background, dark content on the light one
    assert tuple(pixels(logo("circle", WHITE))[1, 1]) == defaults.ALPHA_BACKGROUND_FOR_LIGHT
    assert tuple(pixels(logo("circle", BLACK))[1, 1]) == defaults.ALPHA_BACKGROUND_FOR_DARK
    assert tuple(pixels(blank(WHITE, 0))[1, 1]) == defaults.ALPHA_BACKGROUND_FOR_DARK
    assert tuple(pixels(blank((10, 200, 30)))[1, 1]) == (10, 200, 30)  # opaque: as it is


def test_white_logos_do_not_all_score_one_against_each_other(tmp_path: Path) -> None:
    """Indexing and query paths decode alike: each white logo finds itself at 1.0 first,
    and the other logos (and a blank) below it."""
    photos = tmp_path / "logos"
    photos.mkdir()
    for shape in ("circle", "triangle", "bar"):
        (photos / f"{shape}.png").write_bytes(logo(shape, WHITE))
    (photos / "blank.png").write_bytes(blank(WHITE, 0))
    index = tmp_path / "index"
    assert run_cli("index", photos, "--index", index, *TINY).exit_code == 0
    query = photos / "circle.png"
    found = run_cli("search", query, "--index", index, "-k", "4", "--format", "json").json()
    results = found[0]["results"]
    assert Path(results[0]["path"]).name == "circle.png"
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert all(r["score"] < 0.999 for r in results[1:]), results
