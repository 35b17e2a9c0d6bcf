"""Thumbnails and previews of indexed images (`Index.thumbnail`, `Index.preview`) and their
cache inside the index folder (store/thumbnails.py): made by the indexer's decoder, cached by
content hash and size, bounded in bytes, safe with threads and processes, absent on
read-only media.

Each test builds its own small index (the tiny untrained model), because most of them change
the files or the cache.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import TINY, draw_image, run_cli, save_image
from PIL import Image

import retrieval
from retrieval import BadImage, Index, NotFound, UsageError
from retrieval.sources.decode import decode_image
from retrieval.specs import Preprocess

CORPUS = Path(__file__).parent / "corpus" / "files"


def build(tmp_path: Path, n: int = 3, size: tuple[int, int] = (160, 120)) -> tuple[Index, dict]:
    """An index over `n` drawn JPEGs; returns (Index, {file name: id})."""
    photos = tmp_path / "photos"
    for seed in range(n):
        save_image(draw_image(seed, size), photos / f"p{seed}.jpg", quality=95)
    index_dir = tmp_path / "index"
    result = run_cli("index", photos, "--index", index_dir, *TINY)
    assert result.exit_code == 0, result.stderr
    index = Index(index_dir)
    ids = {}
    for image_id in range(1, n + 1):  # ids count from 1 in a new index
        ids[os.path.basename(index.image(image_id).path)] = image_id
    assert sorted(ids) == [f"p{seed}.jpg" for seed in range(n)]
    return index, ids


def entries(index: Index) -> list[Path]:
    folder = Path(index.directory) / retrieval.defaults.THUMBNAIL_DIR
    return sorted(p for p in folder.glob("*/*.jpg"))


def jpeg(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    image.load()
    return image


def test_thumbnail_is_a_square_jpeg_and_preview_keeps_the_aspect(tmp_path):
    index, ids = build(tmp_path, size=(400, 300))
    assert jpeg(index.thumbnail(ids["p1.jpg"])).size == (256, 256)
    assert jpeg(index.thumbnail(ids["p1.jpg"], size=64)).size == (64, 64)
    assert jpeg(index.preview(ids["p1.jpg"], size=200)).size == (200, 150)
    assert jpeg(index.preview(ids["p1.jpg"])).size == (400, 300)  # never enlarged
    assert len(entries(index)) == 4


def test_preview_applies_exif_orientation(tmp_path):
    photos = tmp_path / "photos"
    image = draw_image(7, (200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees: portrait
    save_image(image, photos / "rotated.jpg", exif=exif.tobytes(), quality=95)
    result = run_cli("index", photos, "--index", tmp_path / "index", *TINY)
    assert result.exit_code == 0, result.stderr
    index = Index(tmp_path / "index")
    record = index.image(1)
    assert (record.width, record.height) == (100, 200)
    assert jpeg(index.preview(1, size=100)).size == (50, 100)


def test_a_second_call_is_a_read_of_the_cached_file(tmp_path):
    """The second call returns the cache entry's bytes: planted different (valid) JPEG
    bytes come back as they are, so nothing was decoded or re-rendered."""
    index, ids = build(tmp_path)
    first = index.thumbnail(ids["p1.jpg"])
    (entry,) = entries(index)
    assert entry.read_bytes() == first
    planted = io.BytesIO()
    Image.new("RGB", (256, 256), (255, 0, 0)).save(planted, "JPEG")
    entry.write_bytes(planted.getvalue())
    assert index.thumbnail(ids["p1.jpg"]) == planted.getvalue()
    assert entries(index) == [entry]


def test_a_damaged_entry_is_made_again(tmp_path):
    index, ids = build(tmp_path)
    first = index.thumbnail(ids["p1.jpg"])
    (entry,) = entries(index)
    entry.write_bytes(first[: len(first) // 2])  # not a whole JPEG
    assert index.thumbnail(ids["p1.jpg"]) == first
    assert entry.read_bytes() == first


def test_a_changed_file_gets_a_new_thumbnail(tmp_path):
    index, ids = build(tmp_path)
    path = tmp_path / "photos" / "p1.jpg"
    before = index.thumbnail(ids["p1.jpg"], size=32)
    save_image(Image.new("RGB", (160, 120), (0, 0, 255)), path, quality=95)  # not re-indexed
    after = index.thumbnail(ids["p1.jpg"], size=32)
    assert after != before
    assert jpeg(after).getpixel((16, 16))[2] > 200  # the new, blue picture
    assert len(entries(index)) == 2  # keyed by content: the old one stays until evicted
    # touched (new mtime, same bytes): the indexed picture's entry is found again
    save_image(draw_image(1, (160, 120)), path, quality=95)
    assert index.thumbnail(ids["p1.jpg"], size=32) == before
    assert len(entries(index)) == 2


@pytest.mark.parametrize(
    "name", ["png_bomb_20000x20000.png", "jpeg_scan_bomb.jpg", "random_bytes.jpg", "empty.jpg"]
)
def test_a_file_the_indexer_refuses_is_refused_with_its_reason(tmp_path, name):
    index, ids = build(tmp_path, n=2)
    data = (CORPUS / name).read_bytes()
    shutil.copyfile(CORPUS / name, tmp_path / "photos" / "p1.jpg")
    with pytest.raises(BadImage) as caught:
        index.thumbnail(ids["p1.jpg"])
    if data:
        preprocess = Preprocess(256, 256, 256, "bicubic", (0.0,) * 3, (1.0,) * 3)
        with pytest.raises(BadImage) as indexer:
            decode_image(data, preprocess)
        assert str(caught.value) == str(indexer.value)
    else:
        assert str(caught.value) == "empty file"
    with pytest.raises(BadImage):
        index.preview(ids["p1.jpg"])
    assert entries(index) == []


def test_a_vanished_file_is_a_bad_image(tmp_path):
    index, ids = build(tmp_path, n=2)
    os.unlink(tmp_path / "photos" / "p1.jpg")
    with pytest.raises(BadImage, match="file vanished"):
        index.thumbnail(ids["p1.jpg"])


@pytest.mark.parametrize("method", ["thumbnail", "preview", "image"])
def test_unknown_ids_are_not_found(tmp_path, method):
    index, _ = build(tmp_path, n=2)
    for bad in (999, -1, 2**70):
        with pytest.raises(NotFound) as caught:
            getattr(index, method)(bad)
        assert str(caught.value) == (
            f"no indexed image has id {bad}; ids are the `id` of search results "
            "(`retrieval search --json`)"
        )
    with pytest.raises(UsageError):
        getattr(index, method)("1")


def test_sizes_outside_the_bounds_are_refused(tmp_path):
    index, ids = build(tmp_path, n=2)
    for size in (0, 15, 4097, True):
        with pytest.raises(UsageError, match="a picture size is 16 to 4096 pixels"):
            index.thumbnail(ids["p1.jpg"], size=size)


def test_threads_asking_at_once_get_identical_bytes(tmp_path):
    index, ids = build(tmp_path)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            results.append(index.thumbnail(ids["p2.jpg"]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(results) == 8 and len(set(results)) == 1
    (entry,) = entries(index)
    assert entry.read_bytes() == results[0]
    usage = Path(index.directory) / "thumbnails" / "usage"
    assert int(usage.read_text()) >= len(results[0])


_CHILD = """
import sys
from retrieval import Index
index = Index(sys.argv[1])
out = [index.thumbnail(int(i), size=int(s)) for i in sys.argv[2].split(",") for s in (32, 48)]
sys.stdout.buffer.write(b"".join(out))
"""


def test_processes_filling_the_cache_at_once_agree(tmp_path):
    index, ids = build(tmp_path, n=3)
    order = ",".join(str(i) for i in sorted(ids.values()))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, index.directory, order],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(3)
    ]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], outputs[0][1]
    assert len({out for out, _ in outputs}) == 1
    assert len(entries(index)) == 6
    expected = b"".join(index.thumbnail(i, size=s) for i in sorted(ids.values()) for s in (32, 48))
    assert outputs[0][0] == expected
    folder = Path(index.directory) / "thumbnails"
    assert int((folder / "usage").read_text()) == sum(p.stat().st_size for p in entries(index))


def test_the_cache_is_bounded_least_recently_used_first(tmp_path, monkeypatch):
    index, ids = build(tmp_path, n=3)
    sizes = {i: len(index.thumbnail(i, size=64)) for i in ids.values()}  # fills 3 entries
    oldest, middle, newest = (entry for entry in sorted(entries(index), key=_mtime))
    for n, entry in enumerate((oldest, middle, newest)):
        os.utime(entry, (1_000_000 + n, 1_000_000 + n))
    index.thumbnail(ids["p0.jpg"], size=64)  # a hit refreshes its "last used" time
    used = next(e for e in entries(index) if e.stat().st_mtime > 2_000_000)
    bound = sum(sizes.values()) + 1  # one more entry passes it
    monkeypatch.setattr(retrieval.defaults, "THUMBNAIL_CACHE_BYTES", bound)
    index.thumbnail(ids["p0.jpg"], size=80)
    left = entries(index)
    total = sum(p.stat().st_size for p in left)
    assert total <= int(bound * 0.9)
    assert used in left  # recently used: kept
    by_age = [e for e in (oldest, middle, newest) if e != used]
    dropped = [e for e in by_age if e not in left]
    assert dropped and dropped == by_age[: len(dropped)]  # the least recently used went
    assert int((Path(index.directory) / "thumbnails" / "usage").read_text()) == total


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def test_read_only_media_makes_thumbnails_without_caching(tmp_path, monkeypatch):
    from test_readonly import statvfs_says_read_only

    index, ids = build(tmp_path, n=2)
    statvfs_says_read_only(monkeypatch)
    first = index.thumbnail(ids["p1.jpg"])
    assert jpeg(first).size == (256, 256)
    assert index.thumbnail(ids["p1.jpg"]) == first
    assert jpeg(index.preview(ids["p1.jpg"])).size == (160, 120)
    assert not (Path(index.directory) / "thumbnails").exists()


# -- check knows the cache -----------------------------------------------------------------


def test_check_reports_the_cache_size(tmp_path):
    index, ids = build(tmp_path, n=2)
    result = run_cli("check", "--index", index.directory, "--json")
    assert "thumbnail_cache" not in result.json()  # no cache yet: the report is as before
    made = [index.thumbnail(i) for i in ids.values()]
    result = run_cli("check", "--index", index.directory)
    assert result.exit_code == 0, result.stdout
    size = sum(map(len, made))
    assert f"  thumbnail cache: 2 entries, {size / 2**20:.1f} MiB" in result.stdout.splitlines()
    result = run_cli("check", "--index", index.directory, "--json")
    assert result.json()["thumbnail_cache"] == {"entries": 2, "bytes": size}
    assert result.json()["ok"] is True


def test_check_repair_deletes_damaged_entries_and_temporary_files(tmp_path):
    index, ids = build(tmp_path, n=2)
    good = index.thumbnail(ids["p0.jpg"])
    index.thumbnail(ids["p1.jpg"])
    damaged = entries(index)[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    temp = damaged.parent / ".x.jpg.tmp-1-2"
    temp.write_bytes(b"half")
    result = run_cli("check", "--index", index.directory)
    assert result.exit_code == 1
    folder = Path(index.directory)
    name = damaged.relative_to(folder).as_posix()
    assert (
        f"  {name}: not a whole thumbnail (damaged or stray) "
        "(--repair deletes it (remade when next shown))"
    ) in result.stdout.splitlines()
    temp_name = temp.relative_to(folder).as_posix()
    assert f"  {temp_name}: temporary file left by an interrupted run" in result.stdout
    result = run_cli("check", "--index", index.directory, "--repair")
    assert result.exit_code == 0, result.stdout
    assert not damaged.exists() and not temp.exists()
    assert run_cli("check", "--index", index.directory).exit_code == 0
    assert index.thumbnail(ids["p0.jpg"]) == good  # remade (or still there)
    assert len(entries(index)) == 2


def test_a_cache_folder_that_is_a_file_or_link_is_not_written_through(tmp_path):
    index, ids = build(tmp_path, n=2)
    folder = Path(index.directory) / "thumbnails"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder.symlink_to(elsewhere)
    assert jpeg(index.thumbnail(ids["p1.jpg"])).size == (256, 256)
    assert list(elsewhere.iterdir()) == []
    result = run_cli("check", "--index", index.directory)
    assert "  thumbnails: is a symlink, not a folder" in result.stdout
    assert run_cli("check", "--index", index.directory, "--repair").exit_code == 0
    assert not folder.exists() and elsewhere.exists()
    index.thumbnail(ids["p1.jpg"])
    assert len(entries(index)) == 1


def test_a_file_replaced_by_a_link_elsewhere_is_not_shown(tmp_path):
    index, ids = build(tmp_path, n=2)
    private = tmp_path / "private.jpg"
    save_image(draw_image(50, (160, 120)), private)
    path = tmp_path / "photos" / "p1.jpg"
    os.unlink(path)
    path.symlink_to(private)
    with pytest.raises(BadImage, match="the file is a symbolic link now, to content that is not"):
        index.thumbnail(ids["p1.jpg"])
    assert entries(index) == []
    # a link to the very bytes that were indexed is shown (an index built with links)
    os.unlink(path)
    indexed = tmp_path / "p1-original.jpg"
    save_image(draw_image(1, (160, 120)), indexed, quality=95)
    path.symlink_to(indexed)
    assert jpeg(index.thumbnail(ids["p1.jpg"])).size == (256, 256)
