"""`retrieval serve` end to end: the real command on a free 127.0.0.1 port, driven by Debian's
Chromium (headless, through Playwright), asserting what a person sees.

Skipped with the reason when Chromium or Playwright is missing (CI installs both).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytest.importorskip("fastapi", reason="the web extra is not installed: pip install '.[web]'")

from conftest import TINY, run_cli  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data" / "photos"
#: Seconds the server may take to answer its first request (imports, opening the index).
STARTUP = 90
#: Milliseconds a page action may take (an upload embeds with the model on 2 busy cores).
ACTION_MS = 60_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`python -m retrieval serve` over an index of data/photos; yields its base URL and
    is stopped afterwards whatever happened."""
    root = tmp_path_factory.mktemp("browser")
    photos = root / "photos"
    shutil.copytree(DATA, photos)
    result = run_cli("index", photos, "--index", root / "index", *TINY)
    assert result.exit_code == 0, result.stderr
    port = _free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retrieval",
            "serve",
            "--index",
            str(root / "index"),
            "--port",
            str(port),
            "--device",
            "cpu",
        ],  # fmt: skip
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, process, root / "server.log")
        yield {"base": base, "photos": photos}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_up(base: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"retrieval serve exited: {log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(base + "/api/info", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    pytest.fail(f"retrieval serve did not answer in {STARTUP} s: {log.read_text()}")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def page(browser, server):
    """A page whose every request is recorded; one to any host but 127.0.0.1 is aborted
    (and fails the test)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    context.set_default_timeout(ACTION_MS)
    outside: list[str] = []

    def route(request_route, request) -> None:
        if urlsplit(request.url).hostname == "127.0.0.1" or request.url.startswith(
            ("data:", "blob:")
        ):
            request_route.continue_()
        else:
            outside.append(request.url)
            request_route.abort()

    context.route("**/*", route)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()
    assert outside == [], f"requests left 127.0.0.1: {outside}"


def _edited(path: Path) -> bytes:
    image = Image.open(path).convert("RGB")
    w, h = image.size
    image = image.crop((w // 8, h // 8, w - w // 8, h - h // 8))
    out = io.BytesIO()
    ImageEnhance.Brightness(image).enhance(1.25).save(out, "JPEG", quality=88)
    return out.getvalue()


def _all_images_decoded(page: Page) -> int:
    """Scroll every <img> into view, wait until each has loaded; returns how many there are
    and fails naming any that did not decode (naturalWidth 0)."""
    images = page.locator("img:not([hidden])")
    for n in range(images.count()):
        images.nth(n).scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.images].filter(i => !i.hidden).every(i => i.complete)"
    )
    broken = page.evaluate(
        "() => [...document.images].filter(i => !i.hidden && i.naturalWidth === 0).map(i => i.src)"
    )
    assert broken == []
    return images.count()


def _paths(page: Page) -> list[str]:
    return page.locator(".results .card .path").all_inner_texts()


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
    paths = _paths(page)
    assert paths and paths[0].endswith("chelsea.jpg")
    assert "Like your image cat.jpg" in page.locator("h2").first.inner_text()
    assert _all_images_decoded(page) == len(paths)
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
    first = _paths(page)[0]
    with page.expect_navigation():
        page.locator(".results .card .thumb").first.click()
    assert "/image/" in page.url
    assert page.locator("h2.path").inner_text() == first
    assert page.locator("dl").inner_text().count("px") == 1
    assert _all_images_decoded(page) >= 2  # the preview and the nearest images
    assert page.evaluate("document.querySelector('img.preview').naturalWidth") > 256 - 1
    page.screenshot(path=str(tmp_path / "image.png"), full_page=True)


def test_a_filter_narrows_the_grid(page, server) -> None:
    page.goto(server["base"] + "/")
    page.fill("input[name=path]", str(server["photos"] / "coffee.jpg"))
    with page.expect_navigation():
        page.click(".by-path button")
    everything = _paths(page)
    assert len(everything) == 10
    page.locator(".refine details.filters summary").click()
    page.select_option(".refine select[name=format]", "PNG")
    with page.expect_navigation():
        page.click(".refine button")
    pngs = _paths(page)
    assert 0 < len(pngs) < len(everything)
    assert all(p.endswith(".png") for p in pngs)
    assert "format=PNG" in page.url
    _all_images_decoded(page)


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
    assert _paths(page) == []


def test_duplicates_and_index_pages(page, server, tmp_path) -> None:
    page.goto(server["base"] + "/dups?threshold=0.3")
    assert page.locator(".group").count() >= 1
    assert page.locator(".group .card.keeper").count() >= page.locator(".group").count()
    _all_images_decoded(page)
    page.screenshot(path=str(tmp_path / "dups.png"), full_page=True)
    page.goto(server["base"] + "/index")
    assert "test_resnet" in page.locator("table.info").inner_text()
    page.goto(server["base"] + "/api/docs")
    assert "/api/search" in page.locator("main").inner_text()
