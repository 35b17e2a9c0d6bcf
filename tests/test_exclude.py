"""--exclude: the matching rule (see `retrieval.sources.scan.compile_excludes`), as a table of
patterns and the files each one excludes from one drawn tree, and end to end through
`retrieval index` with the README's own example."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import TINY, make_photos, run_cli

from retrieval.errors import UsageError
from retrieval.sources.scan import scan

TREE = (
    "keep.jpg",
    "skip.png",
    "thumbnails/t.jpg",
    "thumbnails/deep/t2.jpg",
    "a/b/thumbnails/t3.jpg",
    "a/thumbnails.jpg",
    "a/Thumbnails/upper.jpg",
    "raw/2023/r.jpg",
    "x/raw/2023/r2.jpg",
    ".hidden/h.jpg",
    "cache/c.jpg",
    "x/cache.jpg",
    "[x]/bracket.jpg",
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for name in TREE:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    return root


def excluded(root: Path, *patterns: str) -> set[str]:
    prefix = os.fsencode(root) + b"/"
    kept = {os.fsdecode(e.path.removeprefix(prefix)) for e in scan([root], exclude=patterns).files}
    return set(TREE) - kept


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        ((), set()),
        # no '/': a name at any depth; a folder's name takes everything under it
        (("*.png",), {"skip.png"}),
        (("thumbnails",), {"thumbnails/t.jpg", "thumbnails/deep/t2.jpg", "a/b/thumbnails/t3.jpg"}),
        (("thumbnails*",), {"thumbnails/t.jpg", "thumbnails/deep/t2.jpg",
                            "a/b/thumbnails/t3.jpg", "a/thumbnails.jpg"}),
        (("t?.jpg",), {"thumbnails/deep/t2.jpg", "a/b/thumbnails/t3.jpg"}),
        ((".*",), {".hidden/h.jpg"}),
        (("[!k]*.jpg",), set(TREE) - {"keep.jpg", "skip.png"}),
        (("[x]",), {"x/raw/2023/r2.jpg", "x/cache.jpg"}),  # a class, as in fnmatch
        (("[[]x]",), {"[x]/bracket.jpg"}),
        # matching is case-sensitive
        (("Thumbnails",), {"a/Thumbnails/upper.jpg"}),
        # a trailing '/': folders only
        (("cache/",), {"cache/c.jpg"}),
        (("cache*/",), {"cache/c.jpg"}),
        (("cache*",), {"cache/c.jpg", "x/cache.jpg"}),
        # with '/': relative to the root ...
        (("thumbnails/*",), {"thumbnails/t.jpg", "thumbnails/deep/t2.jpg"}),
        (("raw/2023",), {"raw/2023/r.jpg"}),
        (("a/*/thumbnails",), {"a/b/thumbnails/t3.jpg"}),
        (("*/raw",), {"raw/2023/r.jpg", "x/raw/2023/r2.jpg"}),
        # ... and a leading */ or **/ starts at any depth, the root's level included
        (("*/thumbnails/*",), {"thumbnails/t.jpg", "thumbnails/deep/t2.jpg",
                               "a/b/thumbnails/t3.jpg"}),
        (("**/thumbnails/*",), {"thumbnails/t.jpg", "thumbnails/deep/t2.jpg",
                                "a/b/thumbnails/t3.jpg"}),
        (("**/raw/2023",), {"raw/2023/r.jpg", "x/raw/2023/r2.jpg"}),
        (("a/**/t3.jpg",), {"a/b/thumbnails/t3.jpg"}),
        (("a/**",), {"a/b/thumbnails/t3.jpg", "a/thumbnails.jpg", "a/Thumbnails/upper.jpg"}),
        (("*/*.jpg",), set(TREE) - {"skip.png"}),  # '*' never crosses '/', '*/' any depth
        (("thumbnails/*.jpg",), {"thumbnails/t.jpg"}),
        # repeatable
        (("*.png", "cache/", ".*"), {"skip.png", "cache/c.jpg", ".hidden/h.jpg"}),
    ],
)  # fmt: skip
def test_exclude_rule(tree: Path, patterns: tuple[str, ...], expected: set[str]) -> None:
    assert excluded(tree, *patterns) == expected


def test_a_leading_slash_matches_the_absolute_path(tree: Path) -> None:
    assert excluded(tree, f"{tree}/raw") == {"raw/2023/r.jpg"}
    # '*' is one name: a/b/thumbnails lies two folders down
    assert excluded(tree, f"{tree}/*/thumbnails") == set()
    assert excluded(tree, f"{tree}/**/thumbnails") == {
        "thumbnails/t.jpg",
        "thumbnails/deep/t2.jpg",
        "a/b/thumbnails/t3.jpg",
    }


def test_patterns_never_apply_to_the_root_itself(tree: Path) -> None:
    assert excluded(tree, tree.name) == set()
    assert excluded(tree, "*") == set(TREE)  # but to everything under it


def test_an_empty_pattern_is_refused(tree: Path) -> None:
    with pytest.raises(UsageError, match="an --exclude pattern is empty"):
        scan([tree], exclude=[""])


def test_the_readme_example_excludes_thumbnails_at_any_depth(tmp_path: Path) -> None:
    photos = tmp_path / "exif"
    make_photos(photos, [1])
    make_photos(photos / "thumbnails", [2])
    make_photos(photos / "2023" / "thumbnails", [3])
    index = tmp_path / "index"
    result = run_cli(
        "index", photos, "--index", index, *TINY, "--json", "--exclude", "*/thumbnails/*"
    )
    assert result.exit_code == 0, result.stderr
    assert result.json()["added"] == 1
