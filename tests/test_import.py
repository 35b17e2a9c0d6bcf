"""`retrieval import`: the round trip with export (parquet and npy), rows without image files,
a later `retrieval index` over imported rows, and the files it refuses."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TINY, run_cli
from test_ann import clustered, make_index, synthetic_manifest

from retrieval.api import Index
from retrieval.specs import WeightsSpec
from retrieval.store.index_dir import IndexDir


def stored(directory: Path) -> tuple[list[bytes], np.ndarray]:
    """(paths, vectors) of every stored row, sorted by path."""
    with IndexDir.open(directory) as index_dir, index_dir.catalog.read() as conn:
        rows = [r for batch in index_dir.catalog.metadata_rows(conn) for r in batch]
        dim = index_dir.require_manifest().dim
        rows.sort(key=lambda r: r.path)
        return [r.path for r in rows], index_dir.catalog.decode([r.vector for r in rows], dim)


def answers(directory: Path, xq: np.ndarray) -> list[list[tuple[bytes, float]]]:
    return [
        [(h.path, h.score) for h in q.results] for q in Index(directory).search_vectors(xq, k=5)
    ]


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_round_trip_gives_the_same_search_results(
    tiny_index, exported, tmp_path: Path, fmt: str
) -> None:
    result = run_cli("import", exported[fmt], "--index", tmp_path / "copy", "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert (report["added"], report["updated"], report["dim"]) == (8, 0, 96)
    paths, xb = stored(tiny_index.directory)
    copy_paths, copy_xb = stored(tmp_path / "copy")
    assert copy_paths == paths
    np.testing.assert_array_equal(copy_xb, xb)  # bit for bit
    assert answers(tmp_path / "copy", xb) == answers(tiny_index.directory, xb)
    original, copy = Index(tiny_index.directory).manifest(), Index(tmp_path / "copy").manifest()
    assert copy.model == original.model and copy.precision == original.precision


def test_index_after_parquet_import_keeps_the_rows(tiny_index, exported, tmp_path: Path) -> None:
    """The parquet carries size and mtime: the same files are unchanged, nothing re-embedded."""
    directory = tmp_path / "copy"
    assert run_cli("import", exported["parquet"], "--index", directory).exit_code == 0
    result = run_cli("index", tiny_index.photos, "--index", directory, *TINY, "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert (report["added"], report["updated"], report["unchanged"], report["removed"]) == (
        0,
        0,
        8,
        0,
    )
    assert [f["path"] for f in report["failed"]] == [str(tiny_index.broken)]


def test_index_after_npy_import_re_embeds_and_drops_missing_files(
    tiny_index, exported, tmp_path: Path
) -> None:
    """npy rows have no size/mtime: present files are re-embedded (same vectors), and rows
    whose file is gone from the scanned folder are removed."""
    photos = tmp_path / "photos"
    shutil.copytree(tiny_index.photos, photos)
    directory = tmp_path / "copy"
    assert run_cli("index", photos, "--index", directory, *TINY).exit_code == 0
    export = run_cli("export", "--index", directory, "--format", "npy", "-o", tmp_path / "e.npy")
    assert export.exit_code == 0, export.stderr
    fresh = tmp_path / "fresh"
    assert run_cli("import", tmp_path / "e.npy", "--index", fresh).exit_code == 0
    before_paths, before_xb = stored(fresh)
    (photos / "photo_0.jpg").unlink()
    result = run_cli("index", photos, "--index", fresh, *TINY, "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert (report["added"], report["updated"], report["unchanged"], report["removed"]) == (
        0,
        7,
        0,
        1,
    )
    after_paths, after_xb = stored(fresh)
    kept = [i for i, p in enumerate(before_paths) if not p.endswith(b"photo_0.jpg")]
    assert after_paths == [before_paths[i] for i in kept]
    np.testing.assert_allclose(after_xb, before_xb[kept], atol=1e-6)


def test_import_again_replaces_rows_and_options_apply(exported, tmp_path: Path) -> None:
    directory = tmp_path / "copy"
    first = run_cli(
        "import",
        exported["parquet"],
        "--index",
        directory,
        "--index-type",
        "hnsw",
        "--vector-dtype",
        "float16",
    )
    assert first.exit_code == 0, first.stderr
    again = run_cli("import", exported["npy"], "--index", directory, "--json")
    assert again.exit_code == 0, again.stderr
    assert (again.json()["added"], again.json()["updated"]) == (0, 8)
    info = run_cli("info", "--index", directory, "--json").json()
    assert (info["images"], info["vector_dtype"], info["index_type"]) == (8, "float16", "hnsw")
    assert info["index_params"]["faiss_class"] == "IndexHNSWSQ"
    assert info["index_policy"] == {"requested": "hnsw", "memory_bytes": None}


def test_import_refuses_another_model(exported, tmp_path: Path) -> None:
    make_index(tmp_path / "other", synthetic_manifest(d=16), clustered(20))
    result = run_cli("import", exported["parquet"], "--index", tmp_path / "other")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {exported['parquet']} holds 96-d vectors from test_resnet (untrained (seed 0)), "
        f"but the index at {tmp_path / 'other'} holds 16-d vectors from synthetic "
        f"(untrained (seed 0)); import it into a new index instead: "
        f"`retrieval import {exported['parquet']} --index NEW_DIR`\n"
    )
    assert stored(tmp_path / "other")[1].shape == (20, 16)  # nothing written


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("test_resnet", WeightsSpec("untrained", identity="1")),
        ("test_resnet", WeightsSpec("file", path="/models/test.safetensors", identity="ab" * 32)),
        ("other_net", WeightsSpec("untrained", identity="0")),
    ],
    ids=["other-seed", "weights-file", "other-model"],
)
def test_import_refuses_the_same_dim_from_other_weights_or_model(
    tiny_index, exported, tmp_path: Path, name: str, weights: WeightsSpec
) -> None:
    """Same 96 dimensions, other weights or model: the vectors live in another space."""
    built = Index(tiny_index.directory).manifest()
    other = replace(built, model=replace(built.model, name=name, weights=weights))
    make_index(tmp_path / "other", other, clustered(20, d=96))
    result = run_cli("import", exported["parquet"], "--index", tmp_path / "other")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {exported['parquet']} holds 96-d vectors from test_resnet (untrained (seed 0)), "
        f"but the index at {tmp_path / 'other'} holds 96-d vectors from {name} "
        f"({weights.describe()}); import it into a new index instead: "
        f"`retrieval import {exported['parquet']} --index NEW_DIR`\n"
    )
    assert stored(tmp_path / "other")[1].shape == (20, 96)  # nothing written


def test_import_refuses_files_that_are_not_exports(exported, tmp_path: Path) -> None:
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"path": ["/a.jpg"], "embedding": [[0.6, 0.8]]}), plain)
    result = run_cli("import", plain, "--index", tmp_path / "x")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {plain} carries no retrieval manifest (model, weights, dim): pandas, polars, "
        "DuckDB and datasets drop it when they rewrite a file; give it with --manifest FILE (the "
        "manifest.json of the index or of a `--layout clip-retrieval` export), or import into an "
        "existing index of the same model\n"
    )

    lone = tmp_path / "lone.npy"
    np.save(lone, np.eye(2, dtype=np.float32))
    result = run_cli("import", lone, "--index", tmp_path / "x")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {lone} has no sidecar {tmp_path / 'lone.rows.json'}; import the .npy together "
        "with the .rows.json that `retrieval export --format npy` wrote beside it\n"
    )

    short = tmp_path / "short.npy"
    np.save(short, np.load(exported["npy"])[:3])
    sidecar = json.loads(exported["npy"].with_suffix(".rows.json").read_text())
    (tmp_path / "short.rows.json").write_text(json.dumps(sidecar))
    result = run_cli("import", short, "--index", tmp_path / "x")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {short} holds a (3, 96) matrix but ")
    assert not (tmp_path / "x" / "manifest.json").exists()  # refused before anything was set


def test_import_reads_memory_sizes(exported, tmp_path: Path) -> None:
    bad = run_cli("import", exported["parquet"], "--index", tmp_path / "x", "--memory", "lots")
    assert bad.exit_code == 2
    assert "cannot read the size 'lots'; write it like 512M, 4G or 1.5GB" in bad.stderr
    good = run_cli("import", exported["parquet"], "--index", tmp_path / "y", "--memory", "1G")
    assert good.exit_code == 0, good.stderr
    info = run_cli("info", "--index", tmp_path / "y", "--json").json()
    assert info["index_policy"] == {"requested": "auto", "memory_bytes": 1 << 30}
    assert info["index_type"] == "flat"  # 8 vectors: exact
