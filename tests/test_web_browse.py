"""Browsing the indexed images: `Index.images(offset, limit, under)` (paged, by id) and the
API and page over it (`/api/images?offset=&limit=&under=`, `/browse`), the picker of the
search page: a thumbnail grid where a click is "more like this"."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from retrieval import Index, UsageError

DATA = Path(__file__).resolve().parent.parent / "data" / "photos"
NAMES = ("chelsea.jpg", "coffee.jpg", "astronaut.png", "camera.png", "rocket.webp", "grass.jpg")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browse")
    for n, name in enumerate(NAMES):
        folder = root / "photos" / ("a" if n < 4 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(DATA / name, folder / name)
    (root / "photos" / "a" / "broken.jpg").write_bytes(b"not a jpeg" * 10)
    result = run_cli("index", root / "photos", "--index", root / "index", *TINY)
    assert result.exit_code == 0, result.stderr
    return root / "index"


def test_images_pages_through_the_searchable_images_by_id(index_dir) -> None:
    index = Index(index_dir)
    everything = index.images(limit=100)
    assert len(everything) == 6  # the broken file is no image
    ids = [r.id for r in everything]
    assert ids == sorted(ids)
    assert everything[0] == index.image(ids[0])
    pages = [index.images(offset=o, limit=4) for o in (0, 4, 8)]
    assert [len(p) for p in pages] == [4, 2, 0]
    assert [r.id for p in pages for r in p] == ids
    under = index.images(under=str(index_dir.parent / "photos" / "b"))
    assert sorted(Path(r.path).name for r in under) == ["grass.jpg", "rocket.webp"]
    assert index.images(under=str(index_dir.parent / "photos" / "bb")) == []
    for bad in ({"offset": -1}, {"limit": 0}, {"limit": True}, {"offset": "3"}):
        with pytest.raises(UsageError):
            index.images(**bad)


fastapi = pytest.importorskip("fastapi", reason="the web extra is not installed")
pytest.importorskip("multipart", reason="python-multipart (web extra) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from retrieval.web.app import create_app  # noqa: E402
from retrieval.web.settings import Settings  # noqa: E402


@pytest.fixture(scope="module")
def client(index_dir):
    app = create_app(Settings(index_dir=str(index_dir), device="cpu", warm=False))
    with TestClient(app) as test_client:
        yield test_client


def test_the_api_lists_images_in_pages(client, index_dir) -> None:
    first = client.get("/api/images", params={"limit": 4})
    assert first.status_code == 200, first.text
    body = first.json()
    assert [set(r) >= {"id", "path", "width", "height", "format"} for r in body["images"]]
    assert len(body["images"]) == 4 and body["next_offset"] == 4
    rest = client.get("/api/images", params={"offset": 4, "limit": 4}).json()
    assert len(rest["images"]) == 2 and rest["next_offset"] is None
    ids = [r["id"] for r in body["images"] + rest["images"]]
    assert ids == sorted(ids) and len(set(ids)) == 6
    folder = str(index_dir.parent / "photos" / "b")
    under = client.get("/api/images", params={"under": folder}).json()["images"]
    assert sorted(Path(r["path"]).name for r in under) == ["grass.jpg", "rocket.webp"]
    assert client.get("/api/images", params={"limit": 0}).status_code == 422
    assert client.get("/api/images", params={"offset": -1}).status_code == 422


def test_the_browse_page_is_a_grid_of_thumbnails_to_search_from(client, index_dir) -> None:
    page = client.get("/browse", params={"limit": 4})
    assert page.status_code == 200
    likes = re.findall(r'href="/\?like=(\d+)"', page.text)
    thumbs = re.findall(r'src="/api/images/(\d+)/thumbnail', page.text)
    assert len(likes) == 4 and likes == thumbs
    assert 'href="/browse?offset=4&amp;limit=4"' in page.text  # the next page
    last = client.get("/browse", params={"offset": 4, "limit": 4})
    assert len(re.findall(r'href="/\?like=(\d+)"', last.text)) == 2
    assert "offset=8" not in last.text
    folder = str(index_dir.parent / "photos" / "b")
    narrowed = client.get("/browse", params={"under": folder})
    assert len(re.findall(r'href="/\?like=(\d+)"', narrowed.text)) == 2
    assert 'href="/browse"' in client.get("/").text  # the search page links to the picker
    assert "http://" not in page.text and "https://" not in page.text
