"""Decoding: every bad input becomes a reason (never an exception), every pixel mode becomes
the right RGB, and the crop/resize equals timm's own eval transform."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import draw_image, save_image
from PIL import Image

from retrieval.errors import BadImage
from retrieval.sources.decode import decode_image, hash_bytes, load_file
from retrieval.specs import Preprocess

#: No resize (32 px short side), centre 32 x 32 crop: pixels are the image's own.
SMALL = Preprocess(32, 32, 32, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
RED, GREEN, BLUE, YELLOW, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255,) * 3


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def pixels_of(data: bytes, preprocess: Preprocess = SMALL) -> np.ndarray:
    pixels, *_ = decode_image(data, preprocess)
    assert pixels.shape == (preprocess.height, preprocess.width, 3)
    assert pixels.dtype == np.uint8
    return pixels


def solid(mode: str, colour, size=(32, 32)) -> Image.Image:
    return Image.new(mode, size, colour)


# -- bad input ---------------------------------------------------------------------------------


def _jpeg() -> bytes:
    return encode(draw_image(1, (200, 150)), "JPEG", quality=90)


def _png() -> bytes:
    return encode(draw_image(1, (200, 150)), "PNG")


TRUNCATED = "truncated or corrupt image data ("
UNKNOWN = "not a supported image (unknown or corrupt header)"

BAD_INPUTS = {
    "empty": (lambda: b"", "empty file"),
    "garbage": (lambda: bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8)), UNKNOWN),
    "text file named .jpg": (lambda: b"hello, I am a text file\n" * 20, UNKNOWN),
    "truncated jpeg": (lambda: _jpeg()[: len(_jpeg()) // 2], TRUNCATED),
    "jpeg header only": (lambda: _jpeg()[:30], TRUNCATED),
    "truncated png": (lambda: _png()[: len(_png()) // 2], TRUNCATED),
    "png signature only": (lambda: _png()[:30], UNKNOWN),
    "unsupported format (PCX)": (lambda: encode(solid("RGB", RED), "PCX"), UNKNOWN),
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_is_a_reason_not_an_exception(tmp_path: Path, kind: str) -> None:
    make, reason = BAD_INPUTS[kind]
    data = make()
    path = tmp_path / "bad.jpg"
    path.write_bytes(data)
    result = load_file(os.fsencode(path), SMALL, 100.0)
    assert result.pixels is None
    if reason.endswith("("):
        assert result.error is not None and result.error.startswith(reason), result.error
        assert result.error.endswith(")")
    else:
        assert result.error == reason
    assert result.path == os.fsencode(path)
    if data:
        assert result.content_hash == hash_bytes(data)
        assert result.size == len(data)


def test_oversized_image_names_the_option() -> None:
    data = encode(solid("L", 0, (2000, 1000)), "PNG")
    with pytest.raises(BadImage) as info:
        decode_image(data, SMALL, max_megapixels=1.5)
    assert str(info.value) == (
        "image is 2.0 MP, above the limit of 1.5 MP; "
        "raise it with --max-megapixels if the file is trusted"
    )
    assert decode_image(data, SMALL, max_megapixels=2.0)[1:] == (2000, 1000, "PNG")


def test_missing_file_and_directory_are_reasons(tmp_path: Path) -> None:
    missing = load_file(os.fsencode(tmp_path / "gone.jpg"), SMALL, 100.0)
    assert missing.error == "file vanished before it could be read; it is retried next run"
    folder = load_file(os.fsencode(tmp_path), SMALL, 100.0)
    assert folder.error == "is a directory, not an image file"


# -- orientation and pixel modes ---------------------------------------------------------------


def quadrants(size=(64, 32)) -> Image.Image:
    """Top-left red, top-right green, bottom-left blue, bottom-right yellow."""
    w, h = size
    image = Image.new("RGB", size)
    for colour, box in [
        (RED, (0, 0, w // 2, h // 2)),
        (GREEN, (w // 2, 0, w, h // 2)),
        (BLUE, (0, h // 2, w // 2, h)),
        (YELLOW, (w // 2, h // 2, w, h)),
    ]:
        image.paste(colour, box)
    return image


def assert_close(pixel, colour, tolerance=40) -> None:
    assert np.abs(np.asarray(pixel, int) - np.asarray(colour, int)).max() <= tolerance, pixel


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64 x 32; shown rotated 90 degrees clockwise: 32 x 64
    data = encode(quadrants(), "JPEG", exif=exif.tobytes(), quality=95, subsampling=0)
    pixels, width, height, fmt = decode_image(data, SMALL)
    assert (width, height, fmt) == (32, 64, "JPEG")
    # Rotated clockwise the left column (red over blue) becomes the top row (blue, red);
    # the 32 x 32 centre crop of the 32 x 64 result keeps rows 16..47.
    assert_close(pixels[4, 4], BLUE)
    assert_close(pixels[4, 28], RED)
    assert_close(pixels[28, 4], YELLOW)
    assert_close(pixels[28, 28], GREEN)
    reference = quadrants().transpose(Image.Transpose.ROTATE_270)
    expected = pixels_of(encode(reference, "PNG"))
    assert np.abs(pixels.astype(int) - expected).mean() < 3


def test_without_exif_the_image_is_as_stored() -> None:
    pixels, width, height, _ = decode_image(encode(quadrants(), "PNG"), SMALL)
    assert (width, height) == (64, 32)
    assert_close(pixels[4, 4], RED, 0)
    assert_close(pixels[28, 28], YELLOW, 0)


def test_cmyk_jpeg_and_tiff() -> None:
    cmyk = solid("CMYK", (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    assert_close(pixels_of(encode(cmyk, "TIFF"))[16, 16], RED, 0)
    assert_close(pixels_of(encode(cmyk, "JPEG", quality=95))[16, 16], RED, 8)


def test_palette_image() -> None:
    image = Image.new("P", (32, 32), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.paste(0, (0, 0, 16, 32))
    pixels = pixels_of(encode(image, "PNG"))
    assert_close(pixels[5, 5], (0, 0, 0), 0)
    assert_close(pixels[5, 25], (10, 200, 30), 0)


def test_palette_with_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (32, 32), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.paste(0, (0, 0, 16, 32))  # index 0 is black but fully transparent
    for fmt in ("PNG", "GIF"):
        pixels = pixels_of(encode(image, fmt, transparency=0))
        assert_close(pixels[5, 5], WHITE, 0)
        assert_close(pixels[5, 25], (10, 200, 30), 0)


def test_grey_and_one_bit() -> None:
    assert_close(pixels_of(encode(solid("L", 77), "PNG"))[9, 9], (77, 77, 77), 0)
    one_bit = solid("1", 0)
    one_bit.paste(1, (16, 0, 32, 32))
    pixels = pixels_of(encode(one_bit, "PNG"))
    assert_close(pixels[5, 5], (0, 0, 0), 0)
    assert_close(pixels[5, 25], WHITE, 0)
    pixels = pixels_of(encode(one_bit, "TIFF", compression="group4"))
    assert_close(pixels[5, 5], (0, 0, 0), 0)
    assert_close(pixels[5, 25], WHITE, 0)


def test_alpha_is_composited_on_white() -> None:
    la = solid("LA", (0, 0))  # black, fully transparent: white
    la.paste((0, 255), (16, 0, 32, 32))  # black, opaque: black
    pixels = pixels_of(encode(la, "PNG"))
    assert_close(pixels[5, 5], WHITE, 0)
    assert_close(pixels[5, 25], (0, 0, 0), 0)
    rgba = solid("RGBA", (255, 0, 0, 128))  # half-transparent red over white: pink
    assert_close(pixels_of(encode(rgba, "PNG"))[9, 9], (255, 127, 127), 1)
    assert_close(pixels_of(encode(rgba, "WEBP", lossless=True))[9, 9], (255, 127, 127), 1)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 32).round().astype(np.uint16)[None, :].repeat(32, axis=0)
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    pixels = pixels_of(data)
    expected = np.linspace(0, 255, 32)
    assert np.abs(pixels[:, :, 0].astype(float) - expected[None, :]).max() <= 1
    assert (pixels == pixels[:, :, :1]).all()  # grey
    assert (pixels >= 250).mean() < 0.05  # clipping would make 98% of it white


def test_dark_sixteen_bit_grey_stays_dark() -> None:
    # Values 0..255 out of 65535 are all but black; they must not be stretched to 0..255.
    ramp = np.linspace(0, 255, 32).round().astype(np.uint16)[None, :].repeat(32, axis=0)
    pixels = pixels_of(encode(Image.fromarray(ramp), "PNG"))
    assert pixels.max() <= 1


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [solid("RGB", c) for c in (GREEN, RED, BLUE)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    pixels, width, height, fmt = decode_image(buffer.getvalue(), SMALL)
    assert (width, height, fmt) == (32, 32, "GIF")
    assert_close(pixels[16, 16], GREEN, 0)


def test_extreme_aspect_ratio_is_padded_to_the_crop() -> None:
    pixels = pixels_of(encode(solid("RGB", RED, (400, 4)), "PNG"))
    assert pixels.shape == (32, 32, 3)


# -- equal to timm's own eval transform --------------------------------------------------------


@pytest.mark.parametrize("size", [(300, 200), (150, 251), (160, 160)])
def test_preprocessing_equals_timm_eval_transform(tmp_path: Path, size, tiny_embedder) -> None:
    from timm.data import create_transform, resolve_model_data_config

    model = tiny_embedder.model
    transform = create_transform(**resolve_model_data_config(model))
    image = draw_image(11, size)
    path = save_image(image, tmp_path / "x.png")
    with Image.open(os.fsdecode(path)) as opened:
        tensor = transform(opened.convert("RGB")).numpy()  # (3, H, W), normalised
    mean = np.array(tiny_embedder.preprocess.mean)[:, None, None]
    std = np.array(tiny_embedder.preprocess.std)[:, None, None]
    theirs = np.round((tensor * std + mean) * 255).transpose(1, 2, 0)
    ours = load_file(path, tiny_embedder.preprocess, 100.0).pixels
    assert ours is not None and ours.shape == theirs.shape == (160, 160, 3)
    assert np.abs(ours.astype(float) - theirs).max() <= 1
