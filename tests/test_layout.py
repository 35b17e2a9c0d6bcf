"""The clip-retrieval layout (ops/layout.py): `ShardWriter`, `export --layout clip-retrieval`,
`import DIR`, and what embedding-reader and autofaiss read from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_ann import clustered, synthetic_manifest

from retrieval.errors import UsageError
from retrieval.ops.layout import ShardWriter
from retrieval.store.catalog import NewRow

DIM = 16


def new_rows(n: int, start: int = 0) -> list[NewRow]:
    return [
        NewRow(
            f"/p/{i:05d}.jpg".encode(),
            100 + i,
            10**18 + i,
            bytes([i % 256]) * 16,
            64,
            48,
            "JPEG",
            None,
            None,
        )
        for i in range(start, start + n)
    ]


def test_shard_writer_rolls_shards_and_writes_the_manifest_last(tmp_path: Path) -> None:
    xb = clustered(25, DIM)
    out = tmp_path / "layout"
    writer = ShardWriter(str(out), synthetic_manifest(DIM), shard_size=10, expected_rows=25)
    writer.write(new_rows(7), xb[:7])
    writer.write(new_rows(18, 7), xb[7:])
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == ["img_emb_0.npy", "img_emb_1.npy"]
    assert not (out / "manifest.json").exists()  # unfinished until close()
    summary = writer.close()
    assert summary.rows == 25 and summary.files[-1] == str(out / "manifest.json")
    shards = [np.load(out / "img_emb" / f"img_emb_{k}.npy") for k in range(3)]
    assert [len(s) for s in shards] == [10, 10, 5]
    np.testing.assert_array_equal(np.concatenate(shards), xb)
    meta = pq.read_table(out / "metadata" / "metadata_2.parquet").to_pylist()
    assert meta[0]["image_path"] == "/p/00020.jpg" and meta[0]["content_hash"] == "14" * 16
    assert meta[0]["id"] is None  # a NewRow has no catalogue id yet
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 25 and manifest["dim"] == DIM and manifest["dtype"] == "float32"
    assert [s["rows"] for s in manifest["shards"]] == [10, 10, 5]


def test_shard_names_are_padded_to_one_width(tmp_path: Path) -> None:
    """k is zero-padded to the digits of the shard count (clip-retrieval's rule), so a plain
    sort of the names (what embedding-reader does) is the numeric order."""
    with ShardWriter(
        str(tmp_path / "o"), synthetic_manifest(DIM), shard_size=2, expected_rows=23
    ) as writer:
        writer.write(new_rows(23), clustered(23, DIM))
    names = sorted(p.name for p in (tmp_path / "o" / "img_emb").iterdir())
    assert names == [f"img_emb_{k:02d}.npy" for k in range(12)]
    metas = sorted(p.name for p in (tmp_path / "o" / "metadata").iterdir())
    assert metas == [f"metadata_{k:02d}.parquet" for k in range(12)]


def test_an_exception_leaves_no_manifest(tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError),
        ShardWriter(str(tmp_path / "o"), synthetic_manifest(DIM), shard_size=2) as writer,
    ):
        writer.write(new_rows(4), clustered(4, DIM))
        writer.write(new_rows(1), clustered(1, DIM + 1))
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_a_folder_with_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("x")
    with pytest.raises(UsageError, match="already holds files"):
        ShardWriter(str(tmp_path / "o"), synthetic_manifest(DIM))
