"""`retrieval serve`'s app through FastAPI's TestClient: a real index of data/photos
(test_resnet, untrained), real uploads, no mocks of the app."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install '.[web]'")
pytest.importorskip("multipart", reason="python-multipart (web extra) is not installed")

from conftest import TINY, run_cli  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402

from retrieval.web.app import create_app  # noqa: E402
from retrieval.web.settings import Settings  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data" / "photos"
FIRST = ("chelsea.jpg", "coffee.jpg", "astronaut.png", "camera.png", "rocket.webp", "grass.jpg")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An index of six data/photos images and a broken file; the other photos are kept
    aside for a later `retrieval index` while the app runs."""
    root = tmp_path_factory.mktemp("web")
    photos, later = root / "photos", root / "later"
    photos.mkdir()
    later.mkdir()
    for source in sorted(DATA.iterdir()):
        shutil.copy2(source, (photos if source.name in FIRST else later) / source.name)
    (photos / "broken.jpg").write_bytes(b"not a jpeg\n" * 20)
    directory = root / "index"
    result = run_cli("index", photos, "--index", directory, *TINY)
    assert result.exit_code == 0, result.stderr
    return {"root": root, "photos": photos, "later": later, "index": directory}


@pytest.fixture()
def client(served):
    app = create_app(Settings(index_dir=str(served["index"]), device="cpu", warm=False))
    with TestClient(app) as test_client:
        yield test_client


def _edited(path: Path) -> bytes:
    """A cropped, brightened JPEG copy of `path`."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    image = image.crop((w // 10, h // 10, w - w // 10, h - h // 10))
    image = ImageEnhance.Brightness(image).enhance(1.2)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88)
    return out.getvalue()


def _id_of(client: TestClient, name: str) -> int:
    found = client.post("/api/search", files={"image": (name, (DATA / name).read_bytes())})
    assert found.status_code == 200, found.text
    return next(h["id"] for h in found.json()["results"] if h["path"].endswith(name))


def test_an_uploaded_edited_copy_finds_its_original_first(client) -> None:
    response = client.post(
        "/api/search",
        files={"image": ("edited.jpg", _edited(DATA / "chelsea.jpg"), "image/jpeg")},
        data={"k": "3"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "edited.jpg"
    assert len(body["results"]) == 3
    assert body["results"][0]["path"].endswith("chelsea.jpg")
    assert body["results"][0]["score"] > body["results"][1]["score"]


def test_more_like_this_by_id_runs_no_model(client) -> None:
    image_id = _id_of(client, "coffee.jpg")
    calls = client.app.state.batcher.calls
    response = client.get(f"/api/images/{image_id}/similar", params={"k": 4})
    assert response.status_code == 200, response.text
    ids = [h["id"] for h in response.json()["results"]]
    assert len(ids) == 4 and image_id not in ids
    assert client.app.state.batcher.calls == calls  # no upload, no model call


def test_filters_narrow_a_search(client) -> None:
    image_id = _id_of(client, "coffee.jpg")
    everything = client.get(f"/api/images/{image_id}/similar", params={"k": 10}).json()
    pngs = client.get(f"/api/images/{image_id}/similar", params={"k": 10, "format": "png"})
    assert pngs.status_code == 200
    paths = [h["path"] for h in pngs.json()["results"]]
    assert paths and all(p.endswith(".png") for p in paths)
    assert len(paths) < len(everything["results"])
    bad = client.get(f"/api/images/{image_id}/similar", params={"min_size": "lots"})
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("min_size: cannot read the size 'lots'")


def test_image_metadata_thumbnail_and_preview(client) -> None:
    image_id = _id_of(client, "astronaut.png")
    record = client.get(f"/api/images/{image_id}").json()
    assert record["path"].endswith("astronaut.png") and record["format"] == "PNG"
    assert record["width"] == 512 and record["height"] == 512
    thumb = client.get(f"/api/images/{image_id}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (256, 256)
    assert client.get(f"/api/images/{image_id}/thumbnail").content == thumb.content
    preview = client.get(f"/api/images/{image_id}/preview", params={"size": 512})
    assert Image.open(io.BytesIO(preview.content)).size == (512, 512)
    odd = client.get(f"/api/images/{image_id}/thumbnail", params={"size": 4000})
    assert odd.status_code == 400 and "size must be one of" in odd.json()["error"]


@pytest.mark.parametrize("tail", ["", "/thumbnail", "/similar", "/preview"])
def test_an_unknown_id_is_a_404_with_a_message(client, tail: str) -> None:
    response = client.get(f"/api/images/99999{tail}")
    assert response.status_code == 404
    assert "99999" in response.json()["error"]


def test_files_are_reached_by_id_only(client) -> None:
    for path in ("/api/images/..%2F..%2Fetc%2Fpasswd", "/api/images/%2Fetc%2Fpasswd/thumbnail"):
        response = client.get(path)
        assert response.status_code in (404, 422)
        assert "root:" not in response.text
    assert client.get("/static/../../api.py").status_code == 404


def test_a_non_image_upload_is_refused_with_a_readable_message(client) -> None:
    response = client.post("/api/search", files={"image": ("notes.txt", b"hello, not a photo")})
    assert response.status_code == 400
    assert response.json()["error"].startswith("cannot use query image notes.txt:")
    empty = client.post("/api/search", files={"image": ("empty.jpg", b"")})
    assert empty.status_code == 400
    assert "empty" in empty.json()["error"]


def test_uploads_are_capped_in_bytes_and_megapixels(served) -> None:
    settings = Settings(
        index_dir=str(served["index"]), device="cpu", max_upload_bytes=1000, max_megapixels=0.1
    )
    with TestClient(create_app(settings)) as small:
        big = small.post("/api/search", files={"image": ("big.jpg", b"x" * 5000)})
        assert big.status_code == 413
        assert "larger than" in big.json()["error"]
    settings = Settings(index_dir=str(served["index"]), device="cpu", max_megapixels=0.1)
    saved = Image.MAX_IMAGE_PIXELS  # the decoder sets Pillow's process-wide guard to its cap
    try:
        with TestClient(create_app(settings)) as capped:
            many = capped.post(
                "/api/search", files={"image": ("a.png", (DATA / "astronaut.png").read_bytes())}
            )
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    assert many.status_code == 400
    assert "megapixel" in many.json()["error"]


def test_concurrent_uploads_share_model_calls(client) -> None:
    data = [_edited(DATA / name) for name in FIRST]
    statuses: list[int] = []

    def upload(n: int) -> None:
        response = client.post("/api/search", files={"image": (f"q{n}.jpg", data[n % 6])})
        statuses.append(response.status_code)

    before = client.app.state.batcher.calls
    threads = [threading.Thread(target=upload, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert statuses == [200] * 12
    assert client.app.state.batcher.calls - before < 12


def test_info_failures_and_dups(client) -> None:
    info = client.get("/api/info").json()
    assert info["images"] == 6 and info["failed"] == 1
    failures = client.get("/api/failures").json()
    assert [f["path"].rsplit("/", 1)[-1] for f in failures] == ["broken.jpg"]
    assert failures[0]["reason"]
    dups = client.get("/api/dups", params={"threshold": 0.2})
    assert dups.status_code == 200
    report = dups.json()
    assert report["threshold"] == 0.2 and report["groups"]
    assert all(g["members"][0]["keep"] for g in report["groups"])
    download = client.get("/api/dups", params={"threshold": 0.2, "download": 1})
    assert "attachment" in download.headers["content-disposition"]
    assert client.get("/api/dups", params={"threshold": 1.5}).status_code == 422


def test_pages_render(client) -> None:
    image_id = _id_of(client, "chelsea.jpg")
    for path in ("/", f"/?like={image_id}", f"/image/{image_id}", "/dups", "/index", "/api/docs"):
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        assert page.headers["content-type"].startswith("text/html")
        assert "http://" not in page.text and "https://" not in page.text  # nothing remote
    assert "broken.jpg" in client.get("/index").text
    missing = client.get("/image/99999")
    assert missing.status_code == 404 and "99999" in missing.text
    spec = client.get("/api/openapi.json").json()
    assert "/api/search" in spec["paths"] and "/api/images/{image_id}/thumbnail" in spec["paths"]


def test_a_broken_upload_on_the_page_says_why(client) -> None:
    page = client.post("/search", files={"image": ("bad.jpg", b"garbage")}, data={"k": "5"})
    assert page.status_code == 400
    assert "cannot use query image bad.jpg" in page.text
    assert 'name="image"' in page.text  # the form is still there to try again


def test_the_token_is_required_off_loopback(served) -> None:
    settings = Settings(index_dir=str(served["index"]), token="s3cret", warm=False)
    with TestClient(create_app(settings)) as guarded:
        none = guarded.get("/api/info")
        assert none.status_code == 401 and "access token" in none.json()["error"]
        wrong = guarded.get("/api/info", headers={"X-Retrieval-Token": "nope"})
        assert wrong.status_code == 403
        assert guarded.get("/api/info", headers={"X-Retrieval-Token": "s3cret"}).status_code == 200
        assert guarded.get("/", params={"token": "wrong"}).status_code == 403
        first = guarded.get("/", params={"token": "s3cret"})
        assert first.status_code == 200
        assert guarded.get("/api/info").status_code == 200  # the cookie it set


def test_the_server_keeps_answering_while_an_index_runs_and_then_sees_it(client, served):
    before = client.get("/api/info").json()
    image_id = _id_of(client, "coffee.jpg")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retrieval",
            "index",
            str(served["later"]),
            "--index",
            str(served["index"]),
            *TINY,
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    answers = []
    try:
        while writer.poll() is None:
            answers.append(client.get(f"/api/images/{image_id}/similar").status_code)
            answers.append(client.get("/api/info").status_code)
        _, err = writer.communicate(timeout=300)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0, err
    assert set(answers) <= {200}
    after = client.get("/api/info").json()
    assert after["images"] == before["images"] + 5
    new = _id_of(client, "hubble_deep_field.jpg")
    assert client.get(f"/api/images/{new}").status_code == 200
