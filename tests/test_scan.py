"""Finding image files: recursion, the extension allow-list, excludes, symlinks, odd names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from retrieval.errors import UsageError
from retrieval.sources.scan import scan


def touch(path: Path | bytes, data: bytes = b"x") -> bytes:
    raw = os.fsencode(path)
    os.makedirs(os.path.dirname(raw), exist_ok=True)
    with open(raw, "wb") as fh:
        fh.write(data)
    return raw


def found(root: Path, **options) -> list[bytes]:
    """Paths found under `root`, relative to it, as bytes (sorted like the scan)."""
    prefix = os.fsencode(root) + b"/"
    return [e.path.removeprefix(prefix) for e in scan([root], **options).files]


def test_recursive_and_entries_carry_size_and_mtime(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg", b"12345")
    touch(tmp_path / "x" / "b.png")
    touch(tmp_path / "x" / "y" / "z" / "c.webp")
    result = scan([tmp_path])
    assert [e.path for e in result.files] == [
        os.fsencode(tmp_path / "a.jpg"),
        os.fsencode(tmp_path / "x" / "b.png"),
        os.fsencode(tmp_path / "x" / "y" / "z" / "c.webp"),
    ]
    first = result.files[0]
    st = os.stat(tmp_path / "a.jpg")
    assert (first.size, first.mtime_ns) == (5, st.st_mtime_ns)
    assert result.problems == []


def test_extension_allow_list_is_case_insensitive(tmp_path: Path) -> None:
    names = [
        "a.JPG", "b.Jpeg", "c.jpeg", "d.PNG", "e.webp", "f.GIF", "g.bmp", "h.TIF", "i.tiff",
        "notes.txt", "raw.cr2", "noext", "movie.mp4", "j.jpg.bak", "jpg", ".hidden.jpg",
    ]  # fmt: skip
    for name in names:
        touch(tmp_path / name)
    assert found(tmp_path) == [
        b".hidden.jpg", b"a.JPG", b"b.Jpeg", b"c.jpeg", b"d.PNG", b"e.webp", b"f.GIF",
        b"g.bmp", b"h.TIF", b"i.tiff",
    ]  # fmt: skip


def test_a_file_named_directly_is_taken_whatever_its_extension(tmp_path: Path) -> None:
    path = tmp_path / "picture.data"
    touch(path)
    assert [e.path for e in scan([path]).files] == [os.fsencode(path)]


def test_same_file_from_two_roots_is_listed_once(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "one.jpg")
    files = scan([tmp_path, tmp_path / "a", tmp_path / "a" / "one.jpg"]).files
    assert [e.path for e in files] == [os.fsencode(tmp_path / "a" / "one.jpg")]


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        ((), [b"keep.jpg", b"skip.png", b"thumbs/t.jpg", b"x/thumbs/t2.jpg"]),
        (("*.png",), [b"keep.jpg", b"thumbs/t.jpg", b"x/thumbs/t2.jpg"]),
        (("thumbs",), [b"keep.jpg", b"skip.png"]),  # a folder name prunes the whole folder
        (("thumbs/*",), [b"keep.jpg", b"skip.png", b"x/thumbs/t2.jpg"]),  # relative path
        (("*/thumbs/*",), [b"keep.jpg", b"skip.png"]),  # a leading */: any depth (see test_exclude)
        (("*.png", "thumbs"), [b"keep.jpg"]),  # repeatable
    ],
)
def test_exclude_globs(tmp_path: Path, patterns: tuple[str, ...], expected: list[bytes]) -> None:
    for name in ("keep.jpg", "skip.png", "thumbs/t.jpg", "x/thumbs/t2.jpg"):
        touch(tmp_path / name)
    assert found(tmp_path, exclude=patterns) == expected


def test_symlinks_are_not_followed_by_default(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    touch(outside / "far.jpg")
    root = tmp_path / "root"
    touch(root / "real.jpg")
    (root / "link_dir").symlink_to(outside, target_is_directory=True)
    (root / "link_file.jpg").symlink_to(outside / "far.jpg")
    (root / "dangling.jpg").symlink_to(tmp_path / "nothing.jpg")
    result = scan([root])
    assert [e.path for e in result.files] == [os.fsencode(root / "real.jpg")]
    assert result.problems == []


def test_follow_symlinks_is_loop_safe(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    touch(outside / "far.jpg")
    root = tmp_path / "root"
    touch(root / "real.jpg")
    touch(root / "sub" / "inner.jpg")
    (root / "link_dir").symlink_to(outside, target_is_directory=True)
    (root / "link_file.jpg").symlink_to(outside / "far.jpg")
    (root / "dangling.jpg").symlink_to(tmp_path / "nothing.jpg")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # root -> sub -> root
    (outside / "back").symlink_to(root / "sub", target_is_directory=True)
    result = scan([root], follow_symlinks=True)
    assert found(root, follow_symlinks=True) == [
        b"link_dir/far.jpg",
        b"link_file.jpg",
        b"real.jpg",
        b"sub/inner.jpg",
    ]
    assert result.problems == []  # a dangling link is not an unreadable folder


def test_non_utf8_names(tmp_path: Path) -> None:
    folder = os.path.join(os.fsencode(tmp_path), b"caf\xe9")  # Latin-1 folder name
    touch(os.path.join(folder, b"\xff.jpg"))
    touch(os.path.join(folder, b"na\xefve \x80.JPEG"))
    touch(os.path.join(folder, b"\xfe.txt"))
    assert found(tmp_path) == [b"caf\xe9/na\xefve \x80.JPEG", b"caf\xe9/\xff.jpg"]  # byte order


def test_missing_root_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "no such folder"
    with pytest.raises(UsageError) as info:
        scan([tmp_path, missing])
    assert str(info.value) == f"{missing} does not exist; check the path"
