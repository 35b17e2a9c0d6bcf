"""The clip-retrieval layout (ops/layout.py): `ShardWriter`, `export --layout clip-retrieval`,
`import DIR`, and what embedding-reader and autofaiss read from it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TINY, run_cli
from test_ann import clustered, make_index, synthetic_manifest

from retrieval.api import Index
from retrieval.errors import UsageError
from retrieval.ops.import_checks import NOTHING
from retrieval.ops.layout import METADATA_COLUMNS, ShardWriter
from retrieval.store.catalog import NewRow
from retrieval.store.index_dir import IndexDir

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


# -- export --layout clip-retrieval and import DIR, on the tiny index ---------------------------


@pytest.fixture(scope="module")
def layout(tiny_index, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`export --layout clip-retrieval --shard-size 3` of the tiny index (8 rows: 3 shards)."""
    out = tmp_path_factory.mktemp("layout") / "embeddings"
    result = run_cli(
        "export",
        "--index",
        tiny_index.directory,
        "--layout",
        "clip-retrieval",
        "--shard-size",
        "3",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"exported 8 embeddings (96-d, float32) in 3 shard(s) to {out}\n"
    return out


def catalogue(directory: Path) -> tuple[list[int], list[bytes], np.ndarray]:
    """(ids, paths, vectors) of every stored row, in id order."""
    with IndexDir.open(directory) as index_dir, index_dir.catalog.read() as conn:
        rows = [r for batch in index_dir.catalog.metadata_rows(conn) for r in batch]
        dim = index_dir.require_manifest().dim
        xb = index_dir.catalog.decode([r.vector for r in rows], dim)
        return [r.id for r in rows], [r.path for r in rows], xb


def by_path(directory: Path) -> tuple[list[bytes], np.ndarray]:
    _, paths, xb = catalogue(directory)
    order = sorted(range(len(paths)), key=paths.__getitem__)
    return [paths[i] for i in order], xb[order]


def test_layout_files_sizes_and_columns(tiny_index, layout: Path) -> None:
    ids, paths, xb = catalogue(tiny_index.directory)
    assert sorted(p.name for p in (layout / "img_emb").iterdir()) == [
        "img_emb_0.npy",
        "img_emb_1.npy",
        "img_emb_2.npy",
    ]
    shards = [np.load(layout / "img_emb" / f"img_emb_{k}.npy") for k in range(3)]
    assert [s.shape for s in shards] == [(3, 96), (3, 96), (2, 96)]
    assert all(s.dtype == np.float32 for s in shards)
    np.testing.assert_array_equal(np.concatenate(shards), xb)  # in id order, bit for bit
    meta = pq.read_table(sorted((layout / "metadata").iterdir())).to_pylist()
    assert list(meta[0]) == list(METADATA_COLUMNS)  # image_path first; no embedding column
    assert {m["path_bytes"] for m in meta} == {None}  # set only for names that are not UTF-8
    assert [m["id"] for m in meta] == ids
    assert [m["image_path"].encode() for m in meta] == paths
    assert all(len(m["content_hash"]) == 32 and int(m["content_hash"], 16) >= 0 for m in meta)
    info = json.loads((layout / "manifest.json").read_text())
    assert (info["layout"], info["dim"], info["rows"], info["normalized"]) == (
        "clip-retrieval",
        96,
        8,
        True,
    )
    assert info["manifest"] == Index(tiny_index.directory).manifest().to_dict()


def test_import_of_the_layout_round_trips(tiny_index, layout: Path, tmp_path: Path) -> None:
    result = run_cli("import", layout, "--index", tmp_path / "copy", "--json")
    assert result.exit_code == 0, result.stderr
    assert (result.json()["added"], result.json()["dim"]) == (8, 96)
    paths, xb = by_path(tiny_index.directory)
    copy_paths, copy_xb = by_path(tmp_path / "copy")
    assert copy_paths == paths
    np.testing.assert_array_equal(copy_xb, xb)
    copy = Index(tmp_path / "copy").manifest()
    assert copy.model == Index(tiny_index.directory).manifest().model
    # the metadata came along: a later `index` of the same folder re-embeds nothing
    result = run_cli("index", tiny_index.photos, "--index", tmp_path / "copy", *TINY, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["added"] == 0 and result.json()["updated"] == 0


def test_float16_layout_round_trips_within_tolerance(tiny_index, tmp_path: Path) -> None:
    out = tmp_path / "half"
    result = run_cli(
        "export",
        "--index",
        tiny_index.directory,
        "--layout",
        "clip-retrieval",
        "--dtype",
        "float16",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.stderr
    assert [p.name for p in (out / "img_emb").iterdir()] == ["img_emb_0.npy"]  # one shard
    assert np.load(out / "img_emb" / "img_emb_0.npy").dtype == np.float16
    assert run_cli("import", out, "--index", tmp_path / "copy").exit_code == 0
    paths, xb = by_path(tiny_index.directory)
    copy_paths, copy_xb = by_path(tmp_path / "copy")
    assert copy_paths == paths
    assert np.abs(copy_xb - xb).max() < 2e-3
    assert np.einsum("ij,ij->i", copy_xb, xb).min() >= 0.9999


def test_embedding_reader_reads_every_row(tiny_index, layout: Path) -> None:
    """embedding-reader's parquet_npy format (what clip-retrieval's index step and autofaiss
    use to read embeddings with metadata) reads the layout unchanged."""
    embedding_reader = pytest.importorskip("embedding_reader")
    reader = embedding_reader.EmbeddingReader(
        str(layout / "img_emb"),
        file_format="parquet_npy",
        meta_columns=["image_path"],
        metadata_folder=str(layout / "metadata"),
    )
    assert (reader.count, reader.dimension) == (8, 96)
    got_paths: list[str] = []
    got_xb = []
    for xb, meta in reader(batch_size=5, start=0, end=reader.count, show_progress=False):
        got_xb.append(xb)
        got_paths.extend(meta["image_path"].tolist())
    _, paths, xb = catalogue(tiny_index.directory)
    assert got_paths == [p.decode() for p in paths]
    np.testing.assert_array_equal(np.concatenate(got_xb), xb)


def test_what_autofaiss_reads(tiny_index, layout: Path) -> None:
    """autofaiss --embeddings DIR/img_emb takes every .npy there in sorted name order (autofaiss
    pins numpy 1.26 and cannot install beside numpy 2: this is that read, done with numpy)."""
    files = sorted((layout / "img_emb").glob("*.npy"))
    xb = np.concatenate([np.load(f) for f in files])
    _, _, stored_xb = catalogue(tiny_index.directory)
    np.testing.assert_array_equal(xb, stored_xb)
    assert np.allclose(np.linalg.norm(xb, axis=1), 1, atol=1e-5)  # inner product = cosine


def test_exact_neighbours_of_the_export_match_search_like(tiny_index, layout: Path) -> None:
    xb = np.concatenate([np.load(f) for f in sorted((layout / "img_emb").glob("*.npy"))])
    meta = pq.read_table(sorted((layout / "metadata").iterdir())).to_pylist()
    paths = [m["image_path"] for m in meta]
    for q in (0, 5):
        scores = xb @ xb[q]
        order = [int(i) for i in np.argsort(-scores, kind="stable") if i != q][:3]
        result = run_cli(
            "search",
            "--like",
            paths[q],
            "--index",
            tiny_index.directory,
            "-k",
            "3",
            "--format",
            "json",
        )
        assert result.exit_code == 0, result.stderr
        hits = result.json()[0]["results"]
        assert [h["path"] for h in hits] == [paths[i] for i in order]
        np.testing.assert_allclose([h["score"] for h in hits], scores[order], atol=1e-5)


def test_export_refuses_a_folder_that_holds_files(tiny_index, layout: Path) -> None:
    result = run_cli(
        "export", "--index", tiny_index.directory, "--layout", "clip-retrieval", "-o", layout
    )
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {layout} already holds files; a layout export writes into a new or empty "
        "folder: remove it or choose another -o\n"
    )


# -- what import DIR refuses: one line each, nothing written -----------------------------------


def _drop_manifest(out: Path) -> None:
    (out / "manifest.json").unlink()


def _short_metadata(out: Path) -> None:
    path = out / "metadata" / "metadata_1.parquet"
    pq.write_table(pq.read_table(path).slice(0, 2), path)


def _wrong_dim(out: Path) -> None:
    np.save(out / "img_emb" / "img_emb_1.npy", clustered(3, 95))


def _nan(out: Path) -> None:
    path = out / "img_emb" / "img_emb_2.npy"
    xb = np.load(path)
    xb[1, 7] = np.nan
    np.save(path, xb)


def _truncated(out: Path) -> None:
    path = out / "img_emb" / "img_emb_0.npy"
    path.write_bytes(path.read_bytes()[:-10])


def _stray(out: Path) -> None:
    np.save(out / "img_emb" / "img_emb_3.npy", clustered(2, 96))


def _listed_twice(out: Path) -> None:
    info = json.loads((out / "manifest.json").read_text())
    info["shards"].append(info["shards"][0])
    info["rows"] += info["shards"][0]["rows"]
    (out / "manifest.json").write_text(json.dumps(info))


def _bad_hash(out: Path) -> None:
    path = out / "metadata" / "metadata_0.parquet"
    table = pq.read_table(path)
    hashes = table.column("content_hash").to_pylist()
    hashes[2] = "not hex"
    i = table.schema.get_field_index("content_hash")
    pq.write_table(table.set_column(i, "content_hash", pa.array(hashes)), path)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            _drop_manifest,
            "{out} has no manifest.json: an unfinished export (it is written last) or not a "
            "`retrieval export --layout clip-retrieval` folder; nothing was imported; export "
            "it again",
        ),
        (
            _short_metadata,
            "{out}/img_emb/img_emb_1.npy holds 3 rows but {out}/metadata/metadata_1.parquet "
            "holds 2: a shard's vectors and metadata must be row-aligned; {nothing}",
        ),
        (_wrong_dim, "{out}/img_emb/img_emb_1.npy: it holds a (3, 95) matrix, not (rows, 96); "),
        (
            _nan,
            "{out}/metadata/metadata_2.parquet (with img_emb_2.npy) row 1: embedding holds "
            "NaN or infinite values; {nothing}",
        ),
        (
            _truncated,
            "{out}/img_emb/img_emb_0.npy: it is 1270 bytes long, but its header describes 3 x 96 "
            "float32 values (1280 bytes with the header): it was cut short or padded; {nothing}",
        ),
        (
            _stray,
            "{out}/img_emb/img_emb_3.npy: it is not listed in {out}/manifest.json, and readers "
            "of the layout would take it; {nothing}",
        ),
        (_listed_twice, "{out}/manifest.json: it lists a shard file twice; {nothing}"),
        (
            _bad_hash,
            "{out}/metadata/metadata_0.parquet (with img_emb_0.npy) row 2: content_hash "
            "'not hex' is not hexadecimal; {nothing}",
        ),
    ],
)
def test_bad_layouts_are_refused_in_one_line(
    layout: Path, tmp_path: Path, tamper, message: str
) -> None:
    out = tmp_path / "bad"
    shutil.copytree(layout, out)
    tamper(out)
    result = run_cli("import", out, "--index", tmp_path / "new")
    assert result.exit_code == 1
    expected = message.format(out=out, nothing=NOTHING)
    assert result.stderr.startswith(f"error: {expected}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "new" / "catalog.sqlite").exists()


# -- parquet files another tool rewrote (the schema metadata, our manifest, is lost) ------------


@pytest.fixture(scope="module")
def rewritten(exported, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny index's parquet export written back by pyarrow without its schema metadata and
    (where pandas is installed) by pandas: both lose the manifest; pandas also turns the
    embedding into a plain list and nullable integers into float64."""
    out = tmp_path_factory.mktemp("rewritten")
    table = pq.read_table(exported["parquet"])
    files = {"pyarrow": out / "pyarrow.parquet"}
    pq.write_table(table.replace_schema_metadata(None), files["pyarrow"])
    try:
        import pandas
    except ImportError:
        return files
    frame = pandas.read_parquet(exported["parquet"])
    frame.loc[0, "width"] = None  # a missing width: pandas stores the column as float64
    files["pandas"] = out / "pandas.parquet"
    frame.to_parquet(files["pandas"])
    schema = pq.read_schema(files["pandas"])
    assert b"retrieval.manifest" not in (schema.metadata or {})
    assert not pa.types.is_fixed_size_list(schema.field("embedding").type)
    assert pa.types.is_floating(schema.field("width").type)
    return files


def test_rewritten_parquet_without_a_manifest_is_refused_into_a_new_index(
    rewritten, tmp_path: Path
) -> None:
    result = run_cli("import", rewritten["pyarrow"], "--index", tmp_path / "new")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {rewritten['pyarrow']} carries no retrieval manifest (model, weights, dim): "
        "pandas, polars, DuckDB and datasets drop it when they rewrite a file; give it with "
        "--manifest FILE (the manifest.json of the index or of a `--layout clip-retrieval` "
        "export), or import into an existing index of the same model\n"
    )


@pytest.mark.parametrize("tool", ["pyarrow", "pandas"])
def test_rewritten_parquet_imports_with_manifest(
    tiny_index, layout: Path, rewritten, tmp_path: Path, tool: str
) -> None:
    if tool not in rewritten:
        pytest.skip("pandas is not installed")
    for manifest in (layout / "manifest.json", tiny_index.directory / "manifest.json"):
        copy = tmp_path / manifest.parent.name
        result = run_cli(
            "import", rewritten[tool], "--manifest", manifest, "--index", copy, "--json"
        )
        assert result.exit_code == 0, result.stderr
        assert result.stderr == ""  # the manifest was given: nothing to warn about
        paths, xb = by_path(tiny_index.directory)
        copy_paths, copy_xb = by_path(copy)
        assert copy_paths == paths
        np.testing.assert_array_equal(copy_xb, xb)
        assert Index(copy).manifest().model == Index(tiny_index.directory).manifest().model
    with IndexDir.open(copy) as index_dir, index_dir.catalog.read() as conn:
        widths = {r.path: r.width for b in index_dir.catalog.metadata_rows(conn) for r in b}
    first = pq.read_table(rewritten[tool]).column("path_bytes")[0].as_py()
    assert widths[first] == (None if tool == "pandas" else 128)
    assert {w for p, w in widths.items() if p != first} == {128}


def test_rewritten_parquet_into_an_existing_index_takes_its_manifest(
    tiny_index, exported, rewritten, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    assert run_cli("import", exported["parquet"], "--index", copy).exit_code == 0
    before = by_path(copy)
    result = run_cli("import", rewritten["pyarrow"], "--index", copy, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["updated"] == 8
    assert result.stderr == (
        f"retrieval: {rewritten['pyarrow']} carries no retrieval manifest (rewritten by another "
        "tool?); its "
        f"vectors are taken as test_resnet (96-d) like the index at {copy}: only their "
        "dimension could be checked\n"
    )
    after = by_path(copy)
    assert after[0] == before[0]
    np.testing.assert_array_equal(after[1], before[1])


def test_rewritten_parquet_of_another_dimension_is_refused(rewritten, tmp_path: Path) -> None:
    make_index(tmp_path / "other", synthetic_manifest(DIM), clustered(5, DIM))
    result = run_cli("import", rewritten["pyarrow"], "--index", tmp_path / "other")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {rewritten['pyarrow']}: it holds 96-d embeddings but the manifest says 16-d; "
        f"{NOTHING}\n"
    )
    assert catalogue(tmp_path / "other")[2].shape == (5, DIM)  # nothing written


# -- a killed export, the library API, odd inputs -------------------------------------------------


@pytest.mark.parametrize("point", ["write-temp/img_emb_1.npy:1", "write-temp/manifest.json:1"])
def test_a_killed_export_never_looks_complete(tiny_index, tmp_path: Path, point: str) -> None:
    """SIGKILL while a shard (or manifest.json itself) is half-written: no manifest.json, so
    `import` refuses the folder instead of reading part of it."""
    out = tmp_path / "killed"
    argv = ["export", "--index", str(tiny_index.directory), "--layout", "clip-retrieval"]
    done = subprocess.run(
        [sys.executable, "-m", "retrieval", *argv, "--shard-size", "3", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RETRIEVAL_TEST_KILL_AT": point},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert not (out / "manifest.json").exists()
    result = run_cli("import", out, "--index", tmp_path / "new")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {out} has no manifest.json: an unfinished export")


def test_library_api_round_trip(tiny_index, tmp_path: Path) -> None:
    import retrieval

    options = retrieval.LayoutOptions("clip-retrieval", shard_size=5, dtype="float32")
    report = retrieval.Index(tiny_index.directory).export(tmp_path / "out", layout=options)
    assert (report.rows, report.dim, report.shards) == (8, 96, 2)
    assert report.to_dict()["files"] == [str(tmp_path / "out")]
    parquet = tmp_path / "plain.parquet"
    retrieval.Index(tiny_index.directory).export(parquet, "parquet")
    pq.write_table(pq.read_table(parquet).replace_schema_metadata(None), parquet)
    copy = retrieval.Index(tmp_path / "copy")
    assert copy.import_files([tmp_path / "out"]).added == 8
    notices: list[str] = []
    again = retrieval.Index(tmp_path / "copy", notify=notices.append).import_files([parquet])
    assert (
        again.updated == 8 and len(notices) == 1 and "carries no retrieval manifest" in notices[0]
    )
    fresh = retrieval.Index(tmp_path / "fresh").import_files(
        [parquet], manifest=tmp_path / "out" / "manifest.json"
    )
    assert fresh.added == 8


def test_an_empty_index_exports_an_empty_layout(tmp_path: Path) -> None:
    make_index(tmp_path / "empty", synthetic_manifest(DIM), clustered(0, DIM))
    out = tmp_path / "out"
    result = run_cli(
        "export", "--index", tmp_path / "empty", "--layout", "clip-retrieval", "-o", out
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "manifest.json").read_text())["rows"] == 0
    result = run_cli("import", out, "--index", tmp_path / "copy", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["added"] == 0


def test_a_plain_folder_is_not_a_layout(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    result = run_cli("import", tmp_path / "photos", "--index", tmp_path / "new")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {tmp_path / 'photos'} is a folder but not a clip-retrieval layout (img_emb/, "
        "metadata/, manifest.json); give the files `retrieval export` wrote\n"
    )


def test_default_export_to_a_folder_says_to_use_the_layout(tiny_index, tmp_path: Path) -> None:
    result = run_cli("export", "--index", tiny_index.directory, "-o", tmp_path)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {tmp_path} is a folder; give -o a file name (or --layout clip-retrieval to "
        "write a folder of shards)\n"
    )


def test_names_that_are_not_utf8_round_trip(tmp_path: Path) -> None:
    """image_path is text (\\xNN for bytes that are not UTF-8); path_bytes, null for every
    UTF-8 name, then keeps the name exactly."""
    rows = new_rows(3)
    rows[1] = NewRow(b"/p/caf\xe9.jpg", 1, 2, None, None, None, None, None, None)
    xb = clustered(3, DIM)
    with ShardWriter(str(tmp_path / "o"), synthetic_manifest(DIM)) as writer:
        writer.write(rows, xb)
    meta = pq.read_table(tmp_path / "o" / "metadata" / "metadata_00000.parquet").to_pylist()
    assert [m["image_path"] for m in meta] == ["/p/00000.jpg", "/p/caf\\xe9.jpg", "/p/00002.jpg"]
    assert [m["path_bytes"] for m in meta] == [None, b"/p/caf\xe9.jpg", None]
    assert Index(tmp_path / "copy").import_files([tmp_path / "o"]).added == 3
    _, paths, stored_xb = catalogue(tmp_path / "copy")
    assert sorted(paths) == sorted(r.path for r in rows)
    assert stored_xb.shape == (3, DIM)
