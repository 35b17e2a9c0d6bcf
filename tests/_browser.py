"""What the browser tests share: `retrieval serve` on a free 127.0.0.1 port over an index of
data/photos (module-scoped, always stopped), Debian's Chromium headless through Playwright,
and a page whose requests may not leave 127.0.0.1. Importing it skips the test module when
Chromium, Playwright or the web extra is missing (CI installs all three).
"""

from __future__ import annotations

import os
import shutil
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

from _procs import free_port  # noqa: E402
from conftest import TINY, run_cli  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data" / "photos"
#: Seconds the server may take to answer its first request (imports, opening the index).
STARTUP = 90
#: Milliseconds a page action may take (an upload embeds with the model on 2 busy cores).
ACTION_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`python -m retrieval serve` over an index of data/photos; yields its base URL and
    is stopped afterwards whatever happened."""
    root = tmp_path_factory.mktemp("browser")
    photos = root / "photos"
    shutil.copytree(DATA, photos)
    result = run_cli("index", photos, "--index", root / "index", *TINY)
    assert result.exit_code == 0, result.stderr
    port = free_port()
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


def all_images_decoded(page: Page) -> int:
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


def paths_shown(page: Page) -> list[str]:
    return page.locator(".results .card .path").all_inner_texts()
