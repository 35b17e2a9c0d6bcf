"""`retrieval serve` end to end, refining and picking: after an upload, a filter changes the
results without a new upload; the Browse page pages through the indexed images and a click
is "more like this". The real command on a free 127.0.0.1 port, Debian's Chromium headless
through Playwright (fixtures as in test_web_browser.py).

Skipped with the reason when Chromium or Playwright is missing (CI installs both).
"""

from __future__ import annotations

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


def test_after_an_upload_a_filter_narrows_without_uploading_again(page, server, tmp_path) -> None:
    page.goto(server["base"] + "/")
    with page.expect_navigation():
        page.set_input_files(
            "#image-input",
            files=[
                {
                    "name": "cat.jpg",
                    "mimeType": "image/jpeg",
                    "buffer": (DATA / "chelsea.jpg").read_bytes(),
                }
            ],  # fmt: skip
        )
    everything = _paths(page)
    assert everything[0].endswith("chelsea.jpg")
    uploads: list[str] = []
    page.on("request", lambda r: uploads.append(r.url) if r.method == "POST" else None)
    page.locator(".refine details.filters summary").click()
    page.select_option(".refine select[name=format]", "PNG")
    with page.expect_navigation():
        page.click(".refine button")
    pngs = _paths(page)
    assert 0 < len(pngs) < len(everything) and all(p.endswith(".png") for p in pngs)
    assert "Like your image cat.jpg" in page.locator("h2").first.inner_text()
    assert "upload=" in page.url and uploads == []  # no new upload
    _all_images_decoded(page)
    page.screenshot(path=str(tmp_path / "refined.png"), full_page=True)


def test_browse_pages_through_the_index_and_a_click_searches(page, server, tmp_path) -> None:
    page.goto(server["base"] + "/")
    with page.expect_navigation():
        page.click("a[href='/browse']")
    cards = page.locator(".browse .card")
    assert cards.count() > 0
    _all_images_decoded(page)
    page.screenshot(path=str(tmp_path / "browse.png"), full_page=True)
    name = page.locator(".browse .card .path").first.inner_text()
    with page.expect_navigation():
        page.locator(".browse .card a.thumb").first.click()
    assert "like=" in page.url
    assert name in page.locator("h2").first.inner_text()
    assert len(_paths(page)) > 0
    _all_images_decoded(page)
