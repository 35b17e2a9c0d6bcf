"""Refining an upload's search: the server keeps an uploaded image's vector a short while
(in memory, a bounded number, under a random id the page carries), so changing k or a filter
searches again without a new upload or a model run. TestClient over a real index."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install '.[web]'")
pytest.importorskip("multipart", reason="python-multipart (web extra) is not installed")

from conftest import TINY, run_cli  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from retrieval.web.app import create_app  # noqa: E402
from retrieval.web.settings import Settings  # noqa: E402
from retrieval.web.uploads import RecentUploads  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data" / "photos"
FIRST = ("chelsea.jpg", "coffee.jpg", "astronaut.png", "camera.png", "rocket.webp", "grass.jpg")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("refine")
    photos = root / "photos"
    photos.mkdir()
    for name in FIRST:
        shutil.copy2(DATA / name, photos / name)
    result = run_cli("index", photos, "--index", root / "index", *TINY)
    assert result.exit_code == 0, result.stderr
    return root / "index"


def _client(index_dir: Path, **settings) -> TestClient:
    return TestClient(create_app(Settings(index_dir=str(index_dir), device="cpu", **settings)))


def _upload_page(client: TestClient, name: str = "chelsea.jpg", **form) -> tuple[str, str]:
    page = client.post("/search", files={"image": (name, (DATA / name).read_bytes())}, data=form)
    assert page.status_code == 200, page.text
    found = re.search(r'name="upload" value="([A-Za-z0-9_-]{16,})"', page.text)
    assert found, "the results page carries no upload id"
    return page.text, found.group(1)


def _paths(html: str) -> list[str]:
    return re.findall(r'<div class="path">([^<]*)</div>', html)


def test_changing_filters_and_k_after_an_upload_needs_no_new_upload(index_dir) -> None:
    with _client(index_dir) as client:
        first, upload = _upload_page(client, k="10")
        assert len(_paths(first)) == 6  # the original among them
        calls = client.app.state.batcher.calls
        page = client.get("/", params={"upload": upload, "k": "3", "format": "PNG"})
        assert page.status_code == 200, page.text
        assert "Like your image" in page.text and "chelsea.jpg" in page.text
        paths = _paths(page.text)
        assert paths and len(paths) <= 2 and all(p.endswith(".png") for p in paths)
        assert f'name="upload" value="{upload}"' in page.text  # refine again from here
        again = client.get("/", params={"upload": upload, "k": "2"})
        assert len(_paths(again.text)) == 2
        assert _paths(again.text) == _paths(first)[:2]  # same query, same order
        assert client.app.state.batcher.calls == calls  # no model run


def test_an_unknown_or_expired_upload_asks_for_the_image_again(index_dir) -> None:
    with _client(index_dir) as client:
        page = client.get("/", params={"upload": "no-such-upload-id-000", "k": "3"})
        assert page.status_code == 404
        assert "upload it again" in page.text
        api = client.get("/api/uploads/no-such-upload-id-000/similar")
        assert api.status_code == 404 and "upload it again" in api.json()["error"]
    with _client(index_dir, keep_uploads_s=0.0) as client:
        _, upload = _upload_page(client)
        assert client.get("/", params={"upload": upload}).status_code == 404


def test_the_api_returns_an_upload_id_to_search_again(index_dir) -> None:
    with _client(index_dir) as client:
        found = client.post(
            "/api/search", files={"image": ("q.jpg", (DATA / "coffee.jpg").read_bytes())}
        )
        body = found.json()
        assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", body["upload_id"])
        again = client.get(f"/api/uploads/{body['upload_id']}/similar", params={"k": 2})
        assert again.status_code == 200, again.text
        assert again.json()["query"] == "q.jpg"
        assert [h["id"] for h in again.json()["results"]] == [h["id"] for h in body["results"][:2]]
        bad = client.get(f"/api/uploads/{body['upload_id']}/similar", params={"min_size": "lots"})
        assert bad.status_code == 400


def test_kept_uploads_are_bounded_and_expire() -> None:
    now = [100.0]
    kept = RecentUploads(limit=2, keep_s=60.0, clock=lambda: now[0])
    a, b = kept.add("a.jpg", [1.0]), kept.add("b.jpg", [2.0])
    assert a != b and kept.get(a) == ("a.jpg", [1.0])
    c = kept.add("c.jpg", [3.0])  # over the bound: the least recently used (b) goes
    assert kept.get(b) is None and kept.get(a) is not None and kept.get(c) is not None
    now[0] += 61
    assert kept.get(a) is None and kept.get(c) is None and len(kept) == 0
