"""`export` / `import` walked as a new user: an `-o x.npy` gets a real .npy, options that do
not go together are refused, and a piece of a clip-retrieval layout (its img_emb/ folder, one
shard, one metadata file) is refused with the layout folder to import instead."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def layout(tiny_index, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layout-cli") / "emb"
    result = run_cli(
        "export", "--index", tiny_index.directory, "--layout", "clip-retrieval",
        "--shard-size", "3", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return out


def test_export_to_a_npy_name_writes_npy(tiny_index, tmp_path: Path) -> None:
    out = tmp_path / "all.npy"
    result = run_cli("export", "--index", tiny_index.directory, "-o", out)
    assert result.exit_code == 0, result.stderr
    xb = np.load(out)
    rows = json.loads((tmp_path / "all.rows.json").read_text())["rows"]
    assert xb.shape == (len(rows), 96) and xb.dtype == np.float32
    # an explicit --format still wins, and a .parquet name stays parquet
    for name, fmt, magic in (("x.npy", "parquet", b"PAR1"), ("y.parquet", None, b"PAR1")):
        more = ("--format", fmt) if fmt else ()
        result = run_cli("export", "--index", tiny_index.directory, "-o", tmp_path / name, *more)
        assert result.exit_code == 0, result.stderr
        assert (tmp_path / name).read_bytes()[:4] == magic


def test_format_does_not_go_with_the_layout(tiny_index, tmp_path: Path) -> None:
    result = run_cli(
        "export", "--index", tiny_index.directory, "--layout", "clip-retrieval",
        "--format", "npy", "-o", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--format does not go with --layout clip-retrieval" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "part", ["img_emb", "metadata", "img_emb/img_emb_0.npy", "metadata/metadata_0.parquet"]
)
def test_a_piece_of_a_layout_points_to_the_layout(layout: Path, tmp_path: Path, part: str) -> None:
    result = run_cli("import", layout / part, "--index", tmp_path / "new")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"is part of the clip-retrieval layout {layout}" in lines[0]
    assert f"`retrieval import {layout}`" in lines[0]
    assert not (tmp_path / "new" / "catalog.sqlite").exists()
