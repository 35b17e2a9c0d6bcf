"""Static galleries: `retrieval search --format html` (and `dups --format html`, through the
same renderer, ops/gallery.py): one self-contained page, read here with html.parser."""

from __future__ import annotations

import base64
import io
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import TINY, draw_image, flipped, run_cli, save_image
from PIL import Image

from retrieval import Index

NAMES = ["a.jpg", "<b>&'x\".jpg", "c d.png", "e.jpg"]


class Page(HTMLParser):
    """The <img> sources, every attribute value, and the text of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.values: list[str] = []
        self.text: list[str] = []
        self.tags: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.values += [value or "" for _, value in attrs]
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(photos, index, query): four drawn images, one with HTML in its name; the query is a
    mirrored copy of the second, outside the folder."""
    root = tmp_path_factory.mktemp("gallery")
    photos = root / "photos"
    for seed, name in enumerate(NAMES):
        save_image(draw_image(seed, (200, 150)), photos / name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    query = Path(os.fsdecode(save_image(flipped(draw_image(1, (200, 150))), root / "q.jpg")))
    result = run_cli("index", photos, "--index", root / "index", *TINY)
    assert result.exit_code == 0, result.stderr
    return photos, root / "index", query


def decoded(src: str) -> Image.Image:
    match = re.fullmatch(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", src)
    assert match, src[:60]
    image = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    assert image.format == "JPEG"
    image.load()
    return image


def test_search_html_is_one_offline_page_with_every_picture_embedded(indexed, tmp_path):
    photos, index, query = indexed
    out = tmp_path / "results.html"
    args = ("search", query, "--index", index, "-k", "4", "--format", "html", "-o", out)
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>")
    assert len(page.images) == 5  # the query, then its 4 results
    assert all(decoded(src).size == (256, 256) for src in page.images)
    assert not re.search(r"https?://|src=['\"](?!data:)|<script|<link", text)  # offline
    words = " ".join(page.text)
    assert f"query: {query}" in words
    assert re.search(r"1\. score 0\.\d{4}", words)
    assert str(photos / NAMES[1]) in words  # the name, as text, exactly
    assert "<b>&'x" not in text  # ... escaped in the markup
    assert page.tags.count("b") == 5  # only the captions' own <b>: no markup from names
    best = words.index("1. score")
    assert words.index(str(photos / NAMES[1])) > best  # the mirrored copy's original ...
    assert words.index(str(photos / NAMES[1])) < words.index("2. score")  # ... comes first


def test_search_html_to_stdout_and_a_query_without_a_picture(indexed):
    photos, index, _ = indexed
    result = run_cli("search", photos / "nothing.jpg", "--index", index, "--format", "html")
    assert result.exit_code == 1
    page = Page(result.stdout)
    assert page.images == []
    assert "no preview: file vanished" in " ".join(page.text)
    assert "error: " in result.stderr


def test_search_html_like_query_shows_the_query_and_uses_the_cache(indexed, tmp_path):
    photos, index, _ = indexed
    cache = Path(index) / "thumbnails"
    out = tmp_path / "like.html"
    args = ("search", "--like", photos / "a.jpg", "--index", index, "--format", "html")
    assert run_cli(*args, "-o", out).exit_code == 0
    assert len(Page(out.read_text()).images) == 4  # the query + the 3 others
    made = sorted(cache.glob("*/*.jpg"))
    assert made  # results went through the thumbnail cache
    stamps = [p.stat().st_mtime_ns for p in made]
    assert run_cli(*args, "-o", out).exit_code == 0
    assert [p.stat().st_mtime_ns for p in sorted(cache.glob("*/*.jpg"))] == stamps


def test_output_goes_with_html_only(indexed, tmp_path):
    _, index, query = indexed
    result = run_cli("search", query, "--index", index, "-o", tmp_path / "x.json")
    assert result.exit_code == 2
    assert "-o/--output goes with --format html" in result.stderr
    inside = Path(index) / "page.html"
    result = run_cli("search", query, "--index", index, "--format", "html", "-o", inside)
    assert result.exit_code == 1 and not inside.exists()


def test_dups_html_shares_the_renderer_and_the_cache(indexed, tmp_path):
    photos, index, _ = indexed
    save_image(draw_image(0, (200, 150)), photos / "copy" / "a.jpg")  # a duplicate of a.jpg
    assert run_cli("index", "--index", index, *TINY).exit_code == 0
    out = tmp_path / "dups.html"
    args = ("dups", "--index", index, "--threshold", "0.9999", "--format", "html", "-o", out)
    result = run_cli(*args, "--quiet")
    assert result.exit_code == 0, result.stderr
    page = Page(out.read_text())
    assert len(page.images) == 2 and all(decoded(s).size == (256, 256) for s in page.images)
    assert "http" not in out.read_text()
    text = Index(index).gallery(Index(index).dups(threshold=0.9999))
    assert Page(text).images == page.images  # the library call gives the same page
