"""`retrieval serve` end to end: the real command on a free 127.0.0.1 port, driven by Debian's
Chromium (headless, through Playwright), asserting what a person sees.

Skipped with the reason when Chromium or Playwright is missing (CI installs both).
"""

from __future__ import annotations

import io
from pathlib import Path

from _browser import (  # noqa: F401 - fixtures: browser, page, server
    DATA,
    all_images_decoded,
    browser,
    page,
    paths_shown,
    server,
)
from PIL import Image, ImageEnhance


def _edited(path: Path) -> bytes:
    image = Image.open(path).convert("RGB")
    w, h = image.size
    image = image.crop((w // 8, h // 8, w - w // 8, h - h // 8))
    out = io.BytesIO()
    ImageEnhance.Brightness(image).enhance(1.25).save(out, "JPEG", quality=88)
    return out.getvalue()


def test_an_uploaded_edited_copy_shows_its_original_first(page, server, tmp_path) -> None:
    page.goto(server["base"] + "/")
    assert page.title().startswith("Search")
    with page.expect_navigation():
        page.set_input_files(
            "#image-input",
            files=[
                {
                    "name": "cat.jpg",
                    "mimeType": "image/jpeg",
                    "buffer": _edited(DATA / "chelsea.jpg"),
                }
            ],  # fmt: skip
        )
    paths = paths_shown(page)
    assert paths and paths[0].endswith("chelsea.jpg")
    assert "Like your image cat.jpg" in page.locator("h2").first.inner_text()
    assert all_images_decoded(page) == len(paths)
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)


def test_clicking_a_result_opens_its_page(page, server, tmp_path) -> None:
    page.goto(server["base"] + "/")
    with page.expect_navigation():
        page.set_input_files(
            "#image-input",
            files=[
                {
                    "name": "rocket.jpg",
                    "mimeType": "image/jpeg",
                    "buffer": _edited(DATA / "rocket.webp"),
                }
            ],  # fmt: skip
        )
    first = paths_shown(page)[0]
    with page.expect_navigation():
        page.locator(".results .card .thumb").first.click()
    assert "/image/" in page.url
    assert page.locator("h2.path").inner_text() == first
    assert page.locator("dl").inner_text().count("px") == 1
    assert all_images_decoded(page) >= 2  # the preview and the nearest images
    assert page.evaluate("document.querySelector('img.preview').naturalWidth") > 256 - 1
    page.screenshot(path=str(tmp_path / "image.png"), full_page=True)


def test_a_filter_narrows_the_grid(page, server) -> None:
    page.goto(server["base"] + "/")
    page.fill("input[name=path]", str(server["photos"] / "coffee.jpg"))
    with page.expect_navigation():
        page.click(".by-path button")
    everything = paths_shown(page)
    assert len(everything) == 10
    page.locator(".refine details.filters summary").click()
    page.select_option(".refine select[name=format]", "PNG")
    with page.expect_navigation():
        page.click(".refine button")
    pngs = paths_shown(page)
    assert 0 < len(pngs) < len(everything)
    assert all(p.endswith(".png") for p in pngs)
    assert "format=PNG" in page.url
    all_images_decoded(page)


def test_a_broken_upload_shows_a_readable_message(page, server) -> None:
    page.goto(server["base"] + "/")
    with page.expect_navigation():
        page.set_input_files(
            "#image-input",
            files=[{"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": b"no image"}],
        )
    message = page.locator(".error").inner_text()
    assert message.startswith("cannot use query image broken.jpg:")
    assert page.locator("#image-input").count() == 1  # the form is there to try again
    assert paths_shown(page) == []


def test_duplicates_and_index_pages(page, server, tmp_path) -> None:
    page.goto(server["base"] + "/dups?threshold=0.3")
    assert page.locator(".group").count() >= 1
    assert page.locator(".group .card.keeper").count() >= page.locator(".group").count()
    all_images_decoded(page)
    page.screenshot(path=str(tmp_path / "dups.png"), full_page=True)
    page.goto(server["base"] + "/index")
    assert "test_resnet" in page.locator("table.info").inner_text()
    page.goto(server["base"] + "/api/docs")
    assert "/api/search" in page.locator("main").inner_text()
