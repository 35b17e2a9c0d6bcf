"""A file is read only if it is the file the scan found: an image swapped for a symbolic link
(or for another file) between the scan and the read becomes a per-file failure, never an
embedding of what the link points to, unless --follow-symlinks allows links."""

from __future__ import annotations

import os
from pathlib import Path

import _procs as P
import pytest
from conftest import draw_image, save_image

from retrieval.sources.decode import load_file
from retrieval.sources.scan import scan
from retrieval.specs import Preprocess

SMALL = Preprocess(32, 32, 32, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
NOW_A_LINK = (
    "the file changed between scan and read (it is a symbolic link now, and links are "
    "followed only with --follow-symlinks, in Python: IndexOptions(follow_symlinks=True)); "
    "skipped"
)
NOW_ANOTHER = (
    "the file changed between scan and read (another file took its name); it is retried next run"
)


def layout(tmp_path: Path) -> tuple[Path, Path]:
    """root/toc/a.jpg, and outside/secret.jpg beside (not under) the root."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    save_image(draw_image(1), root / "toc" / "a.jpg")
    save_image(draw_image(2), outside / "secret.jpg")
    return root, outside / "secret.jpg"


def scanned(root: Path, follow_symlinks: bool = False) -> dict[str, tuple[bytes, tuple]]:
    found = scan([root], follow_symlinks=follow_symlinks)
    return {os.path.basename(e.path).decode(): (e.path, (e.device, e.inode)) for e in found.files}


def test_a_file_swapped_for_a_symlink_after_the_scan_is_not_read(tmp_path: Path) -> None:
    root, secret = layout(tmp_path)
    path, identity = scanned(root)["a.jpg"]
    os.remove(path)
    os.symlink(secret, path)
    result = load_file(path, SMALL, 100.0, follow_symlinks=False, identity=identity)
    assert (result.error, result.pixels, result.content_hash) == (NOW_A_LINK, None, None)
    # O_NOFOLLOW alone refuses the link, with no scan identity to compare
    alone = load_file(path, SMALL, 100.0, follow_symlinks=False)
    assert alone.error == NOW_A_LINK


def test_a_file_replaced_by_another_after_the_scan_is_not_read(tmp_path: Path) -> None:
    root, secret = layout(tmp_path)
    path, identity = scanned(root)["a.jpg"]
    other = root / "toc" / "other.tmp"
    other.write_bytes(secret.read_bytes())
    os.replace(other, path)  # a regular file, but not the one scanned
    result = load_file(path, SMALL, 100.0, follow_symlinks=False, identity=identity)
    assert (result.error, result.pixels) == (NOW_ANOTHER, None)


def test_the_scanned_file_and_allowed_links_are_read(tmp_path: Path) -> None:
    root, secret = layout(tmp_path)
    os.symlink(secret, root / "toc" / "link.jpg")
    files = scanned(root, follow_symlinks=True)
    for name in ("a.jpg", "link.jpg"):
        path, identity = files[name]
        result = load_file(path, SMALL, 100.0, follow_symlinks=True, identity=identity)
        assert result.error is None and result.pixels is not None, name
    # and the link's target swapped after the scan is refused even when links are followed
    path, identity = files["link.jpg"]
    os.remove(path)
    os.symlink(root / "toc" / "a.jpg", path)
    result = load_file(path, SMALL, 100.0, follow_symlinks=True, identity=identity)
    assert result.error == NOW_ANOTHER


@pytest.fixture(scope="module")
def zyg() -> P.Zygote:
    return P.zygote()


def test_index_paused_after_the_scan_does_not_embed_a_swapped_in_symlink(
    zyg: P.Zygote, tmp_path: Path
) -> None:
    root, secret = layout(tmp_path)
    save_image(draw_image(3), root / "toc" / "b.jpg")
    index, flag = tmp_path / "index", tmp_path / "paused"
    argv = ["index", str(root), "--index", str(index), "--json", *P.FAST]
    run = zyg.start(argv, P.pause_env("scanned:1", flag))
    P.wait_for_file(flag, run, zyg)
    a = root / "toc" / "a.jpg"
    os.remove(a)
    os.symlink(secret, a)
    flag.unlink()
    assert zyg.wait(run) == 0, run.stderr
    report = run.json()
    assert report["added"] == 1
    assert report["failed"] == [{"path": str(a), "error": NOW_A_LINK}]
    stored = P.rows(index)
    assert stored[os.fsencode(a)].status != "ok" and stored[os.fsencode(a)].vector is None


def test_links_the_scan_took_are_still_indexed(tmp_path: Path) -> None:
    from conftest import TINY, run_cli

    root, secret = layout(tmp_path)
    os.symlink(secret, root / "toc" / "link.jpg")
    named = tmp_path / "named.jpg"  # a link named directly on the command line
    os.symlink(secret, named)
    followed = run_cli(
        "index", root, named, "--index", tmp_path / "i", *TINY, "--follow-symlinks", "--json"
    )
    assert followed.exit_code == 0, followed.stderr
    assert (followed.json()["added"], followed.json()["failed"]) == (3, [])
    plain = run_cli("index", root, named, "--index", tmp_path / "j", *TINY, "--json")
    assert plain.exit_code == 0, plain.stderr
    assert (plain.json()["added"], plain.json()["failed"]) == (2, [])  # toc/link.jpg skipped


def test_a_touched_file_swapped_for_a_link_after_the_scan_is_not_restatted(
    zyg: P.Zygote, tmp_path: Path
) -> None:
    """The touch check (same size, new mtime: hash to see if the bytes changed) reads with
    the scan's rules too: a link swapped in, even to a file with the same bytes, is refused."""
    root, _ = layout(tmp_path)
    index, flag = tmp_path / "index", tmp_path / "paused"
    argv = ["index", str(root), "--index", str(index), "--json", *P.FAST]
    assert zyg.run(argv).status == 0
    a = root / "toc" / "a.jpg"
    twin = tmp_path / "twin.jpg"  # outside the root, the same bytes as a.jpg
    twin.write_bytes(a.read_bytes())
    os.utime(a, ns=(0, 0))  # touched: same size, another mtime
    run = zyg.start(argv, P.pause_env("scanned:1", flag))
    P.wait_for_file(flag, run, zyg)
    os.remove(a)
    os.symlink(twin, a)
    flag.unlink()
    assert zyg.wait(run) == 0, run.stderr
    report = run.json()
    assert (report["unchanged"], report["failed"]) == (0, [{"path": str(a), "error": NOW_A_LINK}])
