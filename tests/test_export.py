"""Export: npy + sidecar and parquet, read back with numpy / pyarrow alone, equal to what search
uses, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TINY, TINY_DIM, run_cli

from retrieval import Index
from retrieval.store.index_dir import IndexDir
from retrieval.store.vectors import reconstruct


def export(directory: Path, out: Path, fmt: str) -> None:
    result = run_cli("export", "--index", directory, "--format", fmt, "-o", out)
    assert result.exit_code == 0, result.stderr


@pytest.fixture(scope="module")
def exported(tiny_index, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    export(tiny_index.directory, folder / "e.npy", "npy")
    export(tiny_index.directory, folder / "e.parquet", "parquet")
    return folder


def cache_vectors(directory: Path, ids: list[int]) -> np.ndarray:
    """The vectors the search cache holds for `ids`."""
    with IndexDir.open(directory) as index_dir:
        return reconstruct(index_dir.base().index, np.array(ids, np.int64))


def test_npy_and_sidecar(exported, tiny_index) -> None:
    assert sorted(os.listdir(exported)) == ["e.npy", "e.parquet", "e.rows.json"]  # no temps
    xb = np.load(exported / "e.npy")
    assert xb.shape == (8, TINY_DIM) and xb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(xb, axis=1), 1.0, atol=1e-5)
    sidecar = json.loads((exported / "e.rows.json").read_text())
    assert (sidecar["model"], sidecar["dim"]) == ("test_resnet", TINY_DIM)
    assert sidecar["manifest"]["model"] == "test_resnet"
    rows = sidecar["rows"]
    assert [set(r) for r in rows] == [{"id", "path"}] * 8
    assert sorted(r["path"] for r in rows) == sorted(map(str, tiny_index.originals))
    assert len({r["id"] for r in rows}) == 8
    ids = [r["id"] for r in rows]
    np.testing.assert_array_equal(xb, cache_vectors(tiny_index.directory, ids))


def test_parquet_round_trip(exported, tiny_index) -> None:
    table = pq.read_table(exported / "e.parquet")
    assert table.num_rows == 8
    assert {"id", "path", "embedding"} <= set(table.column_names)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), TINY_DIM)
    assert table.schema.field("id").type == pa.int64()
    metadata = table.schema.metadata
    assert metadata[b"model"] == b"test_resnet"
    assert metadata[b"dim"] == str(TINY_DIM).encode()
    assert json.loads(metadata[b"retrieval.manifest"])["dim"] == TINY_DIM
    embedding = table.column("embedding").combine_chunks()
    xb = embedding.values.to_numpy().reshape(-1, TINY_DIM)
    assert xb.dtype == np.float32
    ids = table.column("id").to_pylist()
    np.testing.assert_array_equal(xb, cache_vectors(tiny_index.directory, ids))
    # the same rows as the npy export
    rows = json.loads((exported / "e.rows.json").read_text())["rows"]
    npy = dict(zip([r["id"] for r in rows], np.load(exported / "e.npy"), strict=True))
    for row_id, vector in zip(ids, xb, strict=True):
        np.testing.assert_array_equal(vector, npy[row_id])
    paths = dict(zip(ids, table.column("path").to_pylist(), strict=True))
    assert paths == {r["id"]: r["path"] for r in rows}


def test_exported_vectors_are_what_search_uses(exported, tiny_index) -> None:
    xb = np.load(exported / "e.npy")
    rows = json.loads((exported / "e.rows.json").read_text())["rows"]
    results = Index(tiny_index.directory).search_vectors(xb, k=3)
    for row, result in zip(rows, results, strict=True):
        best = result.results[0]
        assert (best.id, os.fsdecode(best.path)) == (row["id"], row["path"])
        assert best.score == pytest.approx(1.0, abs=1e-5)


def test_export_replaces_an_existing_file_atomically(tiny_index, tmp_path: Path) -> None:
    out = tmp_path / "e.parquet"
    out.write_bytes(b"old contents")
    export(tiny_index.directory, out, "parquet")
    assert pq.read_table(out).num_rows == 8
    out = tmp_path / "plain"  # no .npy suffix: the sidecar is OUT.rows.json
    export(tiny_index.directory, out, "npy")
    assert np.load(out).shape == (8, TINY_DIM)
    assert sorted(os.listdir(tmp_path)) == ["e.parquet", "plain", "plain.rows.json"]


def test_export_of_an_index_without_images(tmp_path: Path) -> None:
    photos = tmp_path / "p"
    photos.mkdir()
    (photos / "bad.jpg").write_bytes(b"nope")
    assert run_cli("index", photos, "--index", tmp_path / "i", *TINY).exit_code == 0
    export(tmp_path / "i", tmp_path / "e.npy", "npy")
    assert np.load(tmp_path / "e.npy").shape == (0, TINY_DIM)
    assert json.loads((tmp_path / "e.rows.json").read_text())["rows"] == []
    export(tmp_path / "i", tmp_path / "e.parquet", "parquet")
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.num_rows == 0
    assert table.schema.metadata[b"dim"] == str(TINY_DIM).encode()
