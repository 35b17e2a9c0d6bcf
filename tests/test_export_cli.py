"""`retrieval export`: to stdout with `-o -`, and never over an index's own files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import TINY, make_photos, run_cli


def test_parquet_to_stdout(tiny_index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("export", "--index", tiny_index.directory, "-o", "-")
    assert result.exit_code == 0, result.stderr
    assert os.listdir(tmp_path) == []  # no file named -
    assert result.stderr == "retrieval: exported 8 embeddings (96-d) to stdout\n"
    streamed = pq.read_table(io.BytesIO(result.stdout_bytes))
    out = tmp_path / "e.parquet"
    assert run_cli("export", "--index", tiny_index.directory, "-o", out).exit_code == 0
    written = pq.read_table(out)
    assert streamed.equals(written)
    assert streamed.schema.metadata == written.schema.metadata
    assert streamed.num_rows == 8


def test_npy_to_stdout_is_refused(tiny_index, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("export", "--index", tiny_index.directory, "--format", "npy", "-o", "-")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        "error: npy export writes two files (OUT.npy and OUT.rows.json) and cannot go to "
        "stdout; use --format parquet for stdout, or give -o a file name\n"
    )
    assert os.listdir(tmp_path) == []


def test_library_exports_parquet_to_a_stream(tiny_index) -> None:
    from retrieval import Index

    buffer = io.BytesIO()
    report = Index(tiny_index.directory).export(buffer, "parquet")
    assert (report.rows, report.files) == (8, ("<stream>",))
    table = pq.read_table(io.BytesIO(buffer.getvalue()))
    xb = np.stack(table["embedding"].to_numpy(zero_copy_only=False))
    assert xb.shape == (8, 96)


@pytest.fixture
def own_index(tmp_path: Path) -> Path:
    make_photos(tmp_path / "p", range(2))
    directory = tmp_path / "i"
    assert run_cli("index", tmp_path / "p", "--index", directory, *TINY).exit_code == 0
    return directory


def catalog_bytes(directory: Path) -> bytes:
    return (directory / "catalog.sqlite").read_bytes()


@pytest.mark.parametrize(
    "name", ["catalog.sqlite", "manifest.json", "vectors.faiss", "new.parquet"]
)
@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_export_into_the_index_folder_is_refused(own_index: Path, name: str, fmt: str) -> None:
    before = catalog_bytes(own_index)
    out = own_index / name
    result = run_cli("export", "--index", own_index, "--format", fmt, "-o", out)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: {out} is inside the index folder {own_index}; writing there could destroy "
        "the index: choose an output outside it\n"
    )
    assert catalog_bytes(own_index) == before
    info = run_cli("info", "--index", own_index, "--json")
    assert info.exit_code == 0 and info.json()["images"] == 2


def test_export_through_a_symlink_into_an_index_folder_is_refused(
    own_index: Path, tiny_index, tmp_path: Path
) -> None:
    before = catalog_bytes(own_index)
    link = tmp_path / "innocent"
    link.symlink_to(own_index)
    result = run_cli("export", "--index", tiny_index.directory, "-o", link / "catalog.sqlite")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {link / 'catalog.sqlite'} is inside the index folder {own_index}; writing "
        "there could destroy the index: choose an output outside it\n"
    )
    assert catalog_bytes(own_index) == before
    file_link = tmp_path / "file-link.parquet"
    file_link.symlink_to(own_index / "catalog.sqlite")
    result = run_cli("export", "--index", tiny_index.directory, "-o", file_link)
    assert result.exit_code == 1 and "is inside the index folder" in result.stderr
    assert catalog_bytes(own_index) == before and os.path.islink(file_link)


def test_parquet_to_a_terminal_is_refused(tiny_index, tmp_path: Path) -> None:
    import pty
    import subprocess
    import sys

    main, child = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "retrieval", "export", "--index", tiny_index.directory]
            + ["-o", "-"],
            stdout=child,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
    finally:
        os.close(main)
        os.close(child)
    assert done.returncode == 2
    assert done.stderr.endswith(
        "Error: -o - writes binary parquet to stdout, which is a terminal; pipe it to a "
        "program, redirect it (> FILE), or give -o FILE\n"
    )
    assert os.listdir(tmp_path) == []
