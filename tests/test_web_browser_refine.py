"""`retrieval serve` end to end, refining and picking: after an upload, a filter changes the
results without a new upload; the Browse page pages through the indexed images and a click
is "more like this". The real command on a free 127.0.0.1 port, Debian's Chromium headless
through Playwright (fixtures as in test_web_browser.py).

Skipped with the reason when Chromium or Playwright is missing (CI installs both).
"""

from __future__ import annotations

from _browser import (  # noqa: F401 - fixtures: browser, page, server
    DATA,
    all_images_decoded,
    browser,
    page,
    paths_shown,
    server,
)


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
    everything = paths_shown(page)
    assert everything[0].endswith("chelsea.jpg")
    uploads: list[str] = []
    page.on("request", lambda r: uploads.append(r.url) if r.method == "POST" else None)
    page.locator(".refine details.filters summary").click()
    page.select_option(".refine select[name=format]", "PNG")
    with page.expect_navigation():
        page.click(".refine button")
    pngs = paths_shown(page)
    assert 0 < len(pngs) < len(everything) and all(p.endswith(".png") for p in pngs)
    assert "Like your image cat.jpg" in page.locator("h2").first.inner_text()
    assert "upload=" in page.url and uploads == []  # no new upload
    all_images_decoded(page)
    page.screenshot(path=str(tmp_path / "refined.png"), full_page=True)


def test_browse_pages_through_the_index_and_a_click_searches(page, server, tmp_path) -> None:
    page.goto(server["base"] + "/")
    with page.expect_navigation():
        page.click("a[href='/browse']")
    cards = page.locator(".browse .card")
    assert cards.count() > 0
    all_images_decoded(page)
    page.screenshot(path=str(tmp_path / "browse.png"), full_page=True)
    name = page.locator(".browse .card .path").first.inner_text()
    with page.expect_navigation():
        page.locator(".browse .card a.thumb").first.click()
    assert "like=" in page.url
    assert name in page.locator("h2").first.inner_text()
    assert len(paths_shown(page)) > 0
    all_images_decoded(page)
