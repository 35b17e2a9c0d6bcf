"""Odd files and folders, end to end: the corpus of bad files, decompression bombs, files that
vanish or change between scan and read, unreadable files and folders, symlink loops, FIFOs and
devices, non-UTF-8 names, 10,000 files in one folder and nesting deeper than the recursion
limit.

How the races are made without timing luck: a real `retrieval index` process is paused at
its "scanned" test point (RETRIEVAL_TEST_PAUSE_AT, see `retrieval.store.files.fault_point`:
the scan is done, no file is read yet), the test deletes or rewrites a file, then lets it go
on; a file that grows *while* it is read is opened through a wrapper whose `read()` appends
to the file first. CI runs as root, where chmod cannot take read access away, so
PermissionError is injected: `builtins.open` for one file, `os.scandir` for one folder (and
an EIO from one listed file's stat).
"""

from __future__ import annotations

import builtins
import errno
import importlib.util
import io
import os
import sqlite3
import stat
import sys
import time
import warnings
from pathlib import Path

import _procs as P
import numpy as np
import pytest
from conftest import TINY, draw_image, make_photos, run_cli, save_image
from PIL import Image, ImageFile
from test_hostile import watchdog

from retrieval import Index, defaults
from retrieval.errors import BadImage
from retrieval.ops.indexing import IndexOptions, IndexReport
from retrieval.sources import scan as scan_module
from retrieval.sources.decode import MAX_JPEG_SCANS, UNEXPECTED, decode_image, load_file
from retrieval.sources.scan import ScanProblem, scan
from retrieval.specs import Preprocess, WeightsSpec

CORPUS = Path(__file__).resolve().parent / "corpus"
_spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
assert _spec and _spec.loader
corpus = sys.modules["make_corpus"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)

#: test_resnet's preprocessing (what `TINY` indexes with), without loading the model.
PRE = Preprocess(160, 160, 168, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
VANISHED = "file vanished before it could be read; it is retried next run"
CHANGED = "file changed while being read; it is retried next run"
DENIED = "permission denied; make the file readable and run again"
NOT_REGULAR_FILE = "not a regular file (a FIFO, device or socket); skipped"
UNKNOWN = "not a supported image (unknown or corrupt header)"


def add(directory: Path, roots: list, **options) -> IndexReport:
    """`Index.add` with the tiny untrained model, decoding in this process."""
    return Index(directory).add(
        [os.fsdecode(r) for r in roots],
        model="test_resnet",
        weights=WeightsSpec("untrained", identity=str(defaults.UNTRAINED_SEED)),
        device="cpu",
        options=IndexOptions(workers=0, **options),
    )


def stored(directory: Path) -> dict[bytes, tuple[str, int, bytes | None]]:
    """path -> (status, size, content_hash) of every catalogue row."""
    uri = f"file:{directory / defaults.CATALOG_FILE}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        rows = conn.execute("SELECT path, status, size, content_hash FROM images").fetchall()
    return {bytes(path): (status, size, digest) for path, status, size, digest in rows}


def b(path: Path | str) -> bytes:
    return os.fsencode(path)


# -- the regression corpus ---------------------------------------------------------------------


@pytest.mark.parametrize("case", corpus.CASES, ids=lambda case: case.name)
def test_corpus_file(case) -> None:
    """Each corpus file gives its documented outcome, fast, with warnings as errors."""
    started = time.monotonic()
    with warnings.catch_warnings(), watchdog(5.0):
        warnings.simplefilter("error")
        result = load_file(b(corpus.FILES / case.name), PRE, defaults.MAX_MEGAPIXELS)
    assert time.monotonic() - started < 5.0
    if case.expect == "ok":
        assert result.error is None
        assert result.pixels is not None and result.pixels.shape == (160, 160, 3)
    else:
        assert result.pixels is None
        assert result.error is not None and result.error.startswith(case.expect), result.error
    if case.expect == corpus.OVER_CAP:
        assert result.error.endswith(
            "above the limit of 100 MP; raise it with --max-megapixels if the file is trusted"
        )


def test_corpus_is_small_and_documented() -> None:
    names = sorted(path.name for path in corpus.FILES.iterdir())
    assert names == sorted(case.name for case in corpus.CASES)
    assert sum((corpus.FILES / name).stat().st_size for name in names) < 2_000_000
    readme = (CORPUS / "README.md").read_text()
    for case in corpus.CASES:
        assert f"| `{case.name}` |" in readme


def test_corpus_through_the_indexer(tmp_path: Path) -> None:
    """The whole corpus in one folder: a bad file costs a failure record, nothing more."""
    argv = ("index", corpus.FILES, "--index", tmp_path / "index", *TINY, "--json")
    result = run_cli(*argv)
    assert result.exit_code == 0, result.stderr
    report = result.json()
    good = sorted(case.name for case in corpus.CASES if case.expect == "ok")
    bad = {case.name: case.expect for case in corpus.CASES if case.expect != "ok"}
    failed = {Path(item["path"]).name: item["error"] for item in report["failed"]}
    assert sorted(failed) == sorted(bad)
    for name, reason in failed.items():
        assert reason.startswith(bad[name]), (name, reason)
    assert (report["added"], report["removed"]) == (len(good), 0)
    # The next run skips what was embedded and tries every failure again.
    again = run_cli(*argv).json()
    assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, len(good))
    assert sorted(Path(item["path"]).name for item in again["failed"]) == sorted(bad)


# -- decompression bombs and huge declared sizes -----------------------------------------------

CAP_MESSAGE = (
    "image is {mp} MP, above the limit of {cap} MP; "
    "raise it with --max-megapixels if the file is trusted"
)


def _gif_frame_beyond_screen() -> bytes:
    """A 24 x 20 GIF screen whose first frame claims 65535 x 65535 (Pillow's own guard)."""
    data = bytearray(corpus.encode(corpus.photo(), "GIF"))
    at = corpus.gif_descriptor(data)
    data[at + 5 : at + 9] = (65535).to_bytes(2, "little") * 2
    return bytes(data)


BOMBS = {
    "png 20000x20000 1-bit, 50 KB": (lambda: corpus.png_one_bit_black(20_000, 20_000), "400.0"),
    "png header 100000x100000": (lambda: corpus.png_with_size(100_000, 100_000), "10000.0"),
    "jpeg header 65500x65500": (lambda: corpus.jpeg_with_size(65_500, 65_500), "4290.2"),
    "gif screen 65535x65535": (lambda: corpus.gif_with_size(65535, 65535), "4294.8"),
    "gif frame beyond its screen": (_gif_frame_beyond_screen, "4294.8"),
    "tiff header 100000x100000": (lambda: corpus.tiff_with_size(100_000, 100_000), "10000.0"),
    "webp canvas 16384x16384": (lambda: corpus.webp_with_canvas(16384, 16384), "268.4"),
}


@pytest.mark.parametrize("kind", list(BOMBS))
def test_bomb_is_refused_from_its_header_without_allocating(kind: str) -> None:
    make, megapixels = BOMBS[kind]
    data = make()
    images_before = Image.core.get_stats()["new_count"]
    started = time.monotonic()
    with pytest.raises(BadImage) as info:
        decode_image(data, PRE, defaults.MAX_MEGAPIXELS)
    assert time.monotonic() - started < 1.0
    assert str(info.value) == CAP_MESSAGE.format(mp=megapixels, cap=100)
    assert Image.core.get_stats()["new_count"] == images_before  # no pixel buffer was made


def test_bomb_under_a_lower_cap_then_allowed_when_raised(tmp_path: Path) -> None:
    """A 4 MP 1-bit PNG (2 KB): refused at --max-megapixels 1, indexed on a re-run at 5."""
    photos = tmp_path / "photos"
    make_photos(photos, [1])
    bomb = photos / "bomb.png"
    bomb.write_bytes(corpus.png_one_bit_black(2000, 2000))
    argv = ("index", photos, "--index", tmp_path / "index", *TINY, "--json")
    first = run_cli(*argv, "--max-megapixels", "1").json()
    message = CAP_MESSAGE.format(mp="4.0", cap=1)
    assert first["failed"] == [{"path": str(bomb), "error": message}]
    assert first["added"] == 1
    second = run_cli(*argv, "--max-megapixels", "5").json()
    assert (second["added"], second["unchanged"], second["failed"]) == (1, 1, [])


def test_jpeg_scan_limit() -> None:
    progressive = corpus.encode(corpus.photo((64, 48)), "JPEG", progressive=True)
    assert decode_image(progressive, PRE)[1:] == (64, 48, "JPEG")
    scans = progressive.count(b"\xff\xda")
    bomb = corpus.jpeg_scan_bomb(MAX_JPEG_SCANS)
    total = bomb.count(b"\xff\xda")
    assert scans < 20 and total > MAX_JPEG_SCANS
    with pytest.raises(BadImage) as info:
        decode_image(bomb, PRE)
    assert str(info.value) == (
        f"JPEG has {total} scans, more than {MAX_JPEG_SCANS} (a decoding-time bomb); "
        "re-encode it if the file is trusted"
    )


# -- exceptions outside Pillow's documented set ------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [RuntimeError("boom"), AssertionError("bad state"), RecursionError("deep"), LookupError("x")],
    ids=lambda e: type(e).__name__,
)
def test_unexpected_exception_from_pillow_is_a_failure_record(
    error: Exception, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_image(draw_image(1), tmp_path / "x.png")

    def broken(self: ImageFile.ImageFile):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken)
    result = load_file(path, PRE, 100.0)
    assert result.pixels is None
    assert result.error == f"{UNEXPECTED} ({type(error).__name__}: {error}); please report it"


def test_ctrl_c_inside_the_decoder_is_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_image(draw_image(1), tmp_path / "x.png")

    def interrupted(self: ImageFile.ImageFile):
        raise KeyboardInterrupt

    monkeypatch.setattr(ImageFile.ImageFile, "load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_file(path, PRE, 100.0)


def test_float_nan_and_inf_pixels_decode_as_black() -> None:
    """Float TIFFs with NaN/inf decode (those pixels black) without numpy warnings."""
    values = np.full((20, 24), 0.5, np.float32)
    values[:, :12] = np.nan
    buffer = io.BytesIO()
    Image.fromarray(values, "F").save(buffer, "TIFF")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels, *_ = decode_image(
            buffer.getvalue(), Preprocess(20, 24, 20, "nearest", *[(0.5,) * 3] * 2)
        )
    assert pixels[:, :12].max() == 0 and pixels[:, 12:].min() == 128


# -- files that vanish or change between scan and read ---------------------------------------


def _index_with_race(tmp_path: Path, index: Path, action) -> IndexReport:
    """`retrieval index` of tmp_path/photos in a real process (forked by the `_procs` zygote)
    that `action()` races: it runs while the process is paused right after its scan, before
    it reads any file. Returns the run's report (from its --json output)."""
    zyg = P.zygote()
    flag = tmp_path / "paused"
    argv = ["index", str(tmp_path / "photos"), "--index", str(index), "--json", *P.FAST]
    run = zyg.start(argv, P.pause_env("scanned:1", flag))
    try:
        P.wait_for_file(flag, run, zyg)
        action()
    finally:
        flag.unlink(missing_ok=True)  # let it go on (or end its pause if the test failed)
    assert zyg.wait(run) == 0, run.stderr
    out = run.json()
    report = IndexReport(**{k: out[k] for k in ("added", "updated", "unchanged", "moved")})
    report.failed = [(b(f["path"]), f["error"]) for f in out["failed"]]
    return report


def test_file_that_vanishes_after_the_scan_is_recorded_and_retried(tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "photos", range(3))
    victim = photos[1]
    content = victim.read_bytes()
    index = tmp_path / "index"
    first = _index_with_race(tmp_path, index, victim.unlink)
    assert (first.added, first.failed) == (2, [(b(victim), VANISHED)])
    assert stored(index)[b(victim)][0] == "failed"
    victim.write_bytes(content)  # it is back: the next run retries it
    second = add(index, [tmp_path / "photos"])
    assert (second.added, second.updated, second.unchanged, second.failed) == (1, 0, 2, [])
    assert {status for status, _, _ in stored(index).values()} == {"ok"}


def test_file_gone_for_good_loses_its_failure_record(tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "photos", range(2))
    index = tmp_path / "index"
    _index_with_race(tmp_path, index, photos[0].unlink)
    second = add(index, [tmp_path / "photos"])
    assert (second.removed, second.unchanged, second.failed) == (1, 1, [])
    assert list(stored(index)) == [b(photos[1])]


def test_file_rewritten_after_the_scan_is_stored_as_read(tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "photos", range(2))
    victim = photos[0]  # a JPEG
    replacement = draw_image(99, (200, 120))

    def rewrite() -> None:
        save_image(replacement, victim, format="JPEG", quality=70)

    index = tmp_path / "index"
    first = _index_with_race(tmp_path, index, rewrite)
    assert (first.added, first.failed) == (2, [])
    status, size, _ = stored(index)[b(victim)]
    assert (status, size) == ("ok", victim.stat().st_size)  # the identity of what was read
    second = add(index, [tmp_path / "photos"])
    assert (second.added, second.updated, second.unchanged) == (0, 0, 2)  # nothing re-embedded


class _GrowsWhileRead:
    """A file object whose read() first appends to the file on disk (a writer racing us)."""

    def __init__(self, real_open, file) -> None:
        self.real_open, self.path = real_open, file
        self.inner = real_open(file, "rb")

    def read(self, size: int = -1) -> bytes:
        with self.real_open(self.path, "ab") as other:
            other.write(b"\0" * 100)
        return self.inner.read(size)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.close()


def _patch_open(monkeypatch: pytest.MonkeyPatch, target: Path, replace) -> None:
    """`open(target, ...)` returns `replace(real_open, target)`; other paths are untouched."""
    real_open = builtins.open
    wanted = b(target)

    def fake_open(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and b(file) == wanted:
            return replace(real_open, file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


def test_file_that_grows_while_read_is_recorded_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = make_photos(tmp_path / "photos", range(2))
    victim = photos[1]  # a PNG: the bytes appended after IEND do not spoil it

    index = tmp_path / "index"
    with monkeypatch.context() as patch:
        _patch_open(patch, victim, _GrowsWhileRead)
        first = add(index, [tmp_path / "photos"])
    assert (first.added, first.failed) == (1, [(b(victim), CHANGED)])
    second = add(index, [tmp_path / "photos"])
    assert (second.added, second.unchanged, second.failed) == (1, 1, [])


# -- unreadable files and folders (PermissionError injected: CI runs as root) -----------------


def test_unreadable_file_is_a_failure_then_indexed_when_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = make_photos(tmp_path / "photos", range(3))
    victim = photos[2]

    def denied(real_open, file):
        raise PermissionError(13, "Permission denied", os.fsdecode(file))

    index = tmp_path / "index"
    with monkeypatch.context() as patch:
        _patch_open(patch, victim, denied)
        first = add(index, [tmp_path / "photos"])
    assert (first.added, first.failed) == (2, [(b(victim), DENIED)])
    second = add(index, [tmp_path / "photos"])
    assert (second.added, second.unchanged, second.failed) == (1, 2, [])


def _deny_scandir(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    real_scandir = os.scandir
    wanted = b(folder)

    def fake_scandir(path=".", *args, **kwargs):
        if b(path) == wanted:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", fake_scandir)


def test_unreadable_folder_is_listed_and_its_rows_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = tmp_path / "photos"
    top = make_photos(photos, [1])
    below = make_photos(photos / "sub", [2, 3]) + make_photos(photos / "sub" / "deeper", [4])
    index = tmp_path / "index"
    argv = ("index", photos, "--index", index, *TINY)
    assert run_cli(*argv, "--json").json()["added"] == 4
    with monkeypatch.context() as patch:
        _deny_scandir(patch, photos / "sub")
        result = run_cli(*argv)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("0 added, 0 updated, 1 unchanged, 0 moved, 0 removed, 1 failed in ")
    assert lines[1:] == [
        f"  failed: {photos / 'sub'}: cannot list this folder (Permission denied); the images "
        "indexed under it are kept until it can be read: fix its permissions and run again"
    ]
    assert sorted(stored(index)) == sorted(b(p) for p in top + below)
    third = run_cli(*argv, "--json").json()
    assert (third["unchanged"], third["removed"], third["failed"]) == (4, 0, [])


class _StatFails:
    """A directory entry whose stat() fails with EIO (a disk error on that one file)."""

    def __init__(self, entry: os.DirEntry) -> None:
        self.entry = entry

    def stat(self, *args, **kwargs) -> os.stat_result:
        raise OSError(errno.EIO, "Input/output error", os.fsdecode(self.entry.path))

    def __getattr__(self, name: str):
        return getattr(self.entry, name)


class _Listing(list):
    """What `os.scandir` returns, as a list: iterable and a context manager."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass


def _stat_fails(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """Listing target's folder gives an entry for `target` whose stat fails with EIO."""
    real_scandir = os.scandir
    wanted = b(target)

    def fake_scandir(path=".", *args, **kwargs):
        if b(path) != b(target.parent):
            return real_scandir(path, *args, **kwargs)
        with real_scandir(path, *args, **kwargs) as it:
            return _Listing(_StatFails(e) if e.path == wanted else e for e in it)

    monkeypatch.setattr(os, "scandir", fake_scandir)


def test_unreadable_file_during_the_scan_keeps_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose stat fails (EACCES, EIO) during the scan is a problem, not a deletion."""
    photos = make_photos(tmp_path / "photos", range(2))
    index = tmp_path / "index"
    add(index, [tmp_path / "photos"])
    with monkeypatch.context() as patch:
        _stat_fails(patch, photos[0])
        report = add(index, [tmp_path / "photos"])
    assert (report.removed, report.unchanged) == (0, 1)
    assert report.failed == [(b(photos[0]), "Input/output error")]
    assert sorted(stored(index)) == sorted(b(p) for p in photos)


# -- links, FIFOs, devices, folders named like images ------------------------------------------


def test_symlink_loops_end_and_dangling_links_are_skipped(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (a,) = make_photos(photos, [1])
    (inner,) = make_photos(photos / "sub", [2])
    (outside,) = make_photos(tmp_path / "elsewhere", [3])
    (photos / "sub" / "loop").symlink_to("..")  # back to photos
    (photos / "sub" / "self").symlink_to("self")  # ELOOP
    (photos / "self.jpg").symlink_to("self.jpg")  # ELOOP, with an image extension
    (photos / "m1").symlink_to("m2")
    (photos / "m2").symlink_to("m1")
    (photos / "gone.jpg").symlink_to("missing.jpg")  # dangling
    (photos / "alias.jpg").symlink_to(a.name)
    (photos / "elsewhere").symlink_to(tmp_path / "elsewhere")
    with watchdog(10.0):
        followed = scan([photos], follow_symlinks=True)
        plain = scan([photos])
    assert [e.path for e in followed.files] == sorted(
        [b(a), b(photos / "alias.jpg"), b(photos / "elsewhere" / outside.name), b(inner)]
    )
    assert followed.problems == []
    assert [e.path for e in plain.files] == sorted([b(a), b(inner)])
    assert plain.problems == []
    with watchdog(60.0):
        result = run_cli(
            "index", photos, "--index", tmp_path / "index", *TINY, "--follow-symlinks", "--json"
        )
    assert result.exit_code == 0, result.stderr
    assert (result.json()["added"], result.json()["failed"]) == (4, [])


def test_fifo_device_and_folder_named_like_images(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (a,) = make_photos(photos, [1])
    (inner,) = make_photos(photos / "folder.jpg", [2])  # a folder named like an image
    fifo = photos / "pipe.jpg"
    os.mkfifo(fifo)
    (photos / "zero.jpg").symlink_to("/dev/zero")
    with watchdog(10.0):
        listed = scan([photos], follow_symlinks=True).files
        named = scan([fifo, "/dev/null"])
        # Opened non-blocking and refused: a FIFO with no writer would block a plain open().
        from_fifo = load_file(b(fifo), PRE, 100.0)
        from_zero = load_file(b"/dev/zero", PRE, 100.0)
        from_folder = load_file(b(photos / "folder.jpg"), PRE, 100.0)
    assert [e.path for e in listed] == sorted([b(a), b(inner)])
    assert named.files == []
    assert named.problems == [
        ScanProblem(b(fifo), scan_module.NOT_REGULAR),
        ScanProblem(b"/dev/null", scan_module.NOT_REGULAR),
    ]
    assert from_fifo.error == from_zero.error == NOT_REGULAR_FILE
    assert from_folder.error == "is a directory, not an image file"
    with watchdog(60.0):
        result = run_cli("index", photos, fifo, "--index", tmp_path / "index", *TINY, "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["added"] == 2
    assert report["failed"] == [{"path": str(fifo), "error": scan_module.NOT_REGULAR}]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


# -- names and shapes of trees -----------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "darwin", reason="APFS refuses names that are not UTF-8")
def test_non_utf8_names_end_to_end(tmp_path: Path) -> None:
    folder = b(tmp_path) + b"/photos"
    good = save_image(draw_image(1), folder + b"/caf\xe9.jpg")
    deeper = save_image(draw_image(2), folder + b"/\xff\xfe dir/x.png")
    bad = folder + b"/d\xe9j\xe0 vu.png"
    with open(bad, "wb") as fh:
        fh.write(b"not a PNG\n" * 10)
    index = tmp_path / "index"
    result = run_cli("index", os.fsdecode(folder), "--index", index, *TINY)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        f"  failed: {tmp_path}/photos/d\\xe9j\\xe0 vu.png: {UNKNOWN}"
    ]
    assert sorted(stored(index)) == sorted([good, deeper, bad])
    found = run_cli("search", os.fsdecode(good), "--index", index, "--format", "paths", "-k", "2")
    assert found.exit_code == 0, found.stderr
    assert found.stdout_bytes.split(b"\n") == [good, deeper, b""]


def _ten_thousand(folder: Path, real: int = 0) -> list[Path]:
    """10,000 empty .jpg files in `folder`, the first of every 10_000 // real a real JPEG."""
    folder.mkdir()
    paths = [folder / f"img_{n:05d}.jpg" for n in range(10_000)]
    for path in paths:
        path.touch()
    for seed, path in enumerate(paths[:: 10_000 // real] if real else []):
        save_image(draw_image(seed, (48, 32)), path, format="JPEG")
    return paths


def test_ten_thousand_files_in_one_folder_scan(tmp_path: Path) -> None:
    paths = _ten_thousand(tmp_path / "many")
    started = time.monotonic()
    found = scan([tmp_path / "many"])
    seconds = time.monotonic() - started
    print(f"\nscan of 10,000 files in one folder: {seconds:.2f} s")
    assert [e.path for e in found.files] == sorted(b(p) for p in paths)
    assert {e.size for e in found.files} == {0} and seconds < 10


@pytest.mark.slow
def test_ten_thousand_files_in_one_folder_indexed(tmp_path: Path) -> None:
    """A whole indexing run over 10,000 names, 9,995 of them empty (no embedding cost)."""
    _ten_thousand(tmp_path / "many", real=5)
    started = time.monotonic()
    report = add(tmp_path / "index", [tmp_path / "many"])
    print(f"\nindex run over 10,000 files: {time.monotonic() - started:.2f} s ({report.summary()})")
    assert (report.added, len(report.failed)) == (5, 9_995)
    assert {error for _, error in report.failed} == {"empty file"}


def test_nesting_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    depth = sys.getrecursionlimit() + 100
    top = b(tmp_path / "deep")
    folders = [top]
    for _ in range(depth):
        folders.append(folders[-1] + b"/d")
    for folder in folders:
        os.mkdir(folder)
    bottom = save_image(draw_image(1), folders[-1] + b"/bottom.png")
    try:
        assert [e.path for e in scan([os.fsdecode(top)]).files] == [bottom]
        report = add(tmp_path / "index", [os.fsdecode(top)])
        assert (report.added, report.failed) == (1, [])
        assert list(stored(tmp_path / "index")) == [bottom]
    finally:  # shutil.rmtree (pytest's cleanup) recurses once per level on Python 3.11
        os.remove(bottom)
        for folder in reversed(folders):
            os.rmdir(folder)
