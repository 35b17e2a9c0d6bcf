"""`retrieval import` refuses what `retrieval index` / `export` could not have written.

Each bad input is a real export of the session's tiny index, tampered with pyarrow, numpy or
json. Every refusal must be one `error:` line naming the file (and row, counted from 0) and
the rule, exit 1, and create nothing: the target index directory must not even appear.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TINY, draw_image, run_cli, save_image

from retrieval.ops.import_checks import NOTHING

ROW = 3  # the row the row-level cases spoil


def refused(args: list, target: Path) -> str:
    """Run `retrieval import ARGS --index target`; check it failed cleanly; return stderr."""
    result = run_cli("import", *args, "--index", target)
    assert result.exit_code == 1, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert "internal error" not in result.stderr
    assert not target.exists()  # nothing created, not even the directory
    return result.stderr


# -- parquet: values in a row --------------------------------------------------------------------


def with_value(table: pa.Table, column: str, value: object, row: int = ROW) -> pa.Table:
    values = table[column].to_pylist()
    values[row] = value
    index = table.schema.get_field_index(column)
    array = pa.array(values, type=table.schema.field(column).type)
    return table.set_column(index, table.schema.field(column), array)


def with_path(table: pa.Table, path: bytes) -> pa.Table:
    table = with_value(table, "path_bytes", path)
    return with_value(table, "path", path.decode("utf-8", "backslashreplace"))


def with_vector(table: pa.Table, change: Callable[[np.ndarray], np.ndarray]) -> pa.Table:
    vector = np.array(table["embedding"][ROW].as_py(), dtype=np.float32)
    return with_value(table, "embedding", change(vector).astype(np.float32).tolist())


ROW_CASES = {
    "size-negative": (
        lambda t: with_value(t, "size", -5),
        "size -5 is negative; sizes are byte counts >= 0",
    ),
    "size-null": (lambda t: with_value(t, "size", None), "size is missing (null)"),
    "mtime-null": (lambda t: with_value(t, "mtime_ns", None), "mtime_ns is missing (null)"),
    "width-negative": (
        lambda t: with_value(t, "width", -3),
        "width -3 is not a positive number of pixels",
    ),
    "height-zero": (
        lambda t: with_value(t, "height", 0),
        "height 0 is not a positive number of pixels",
    ),
    "hash-1MB": (
        lambda t: with_value(t, "content_hash", b"\x01" * (1 << 20)),
        "content_hash is 1048576 bytes long; `retrieval index` writes 16-byte BLAKE2b digests",
    ),
    "format-not-a-name": (
        lambda t: with_value(t, "format", "JPEG; rm -rf /"),
        "format 'JPEG; rm -rf /' is not an image format name (like JPEG or PNG)",
    ),
    "path-relative": (
        lambda t: with_path(t, b"photos/a.jpg"),
        "path 'photos/a.jpg' is relative; paths must be absolute",
    ),
    "path-empty": (lambda t: with_path(t, b""), "path is empty"),
    "path-nul": (
        lambda t: with_path(t, b"/photos/a\x00b.jpg"),
        "path '/photos/a\\x00b.jpg' contains a NUL byte, which no file name can hold",
    ),
    "path-dotdot": (
        lambda t: with_path(t, b"/photos/../../etc/passwd"),
        "path '/photos/../../etc/passwd' is not normalised (it would be '/etc/passwd')",
    ),
    "path-null": (lambda t: with_value(t, "path_bytes", None), "path_bytes is missing (null)"),
    "path-disagrees": (
        lambda t: with_value(t, "path", "/elsewhere.jpg"),
        "path '/elsewhere.jpg' does not match path_bytes '{path}'",
    ),
    "vector-not-unit": (
        lambda t: with_vector(t, lambda v: 2 * v),
        "embedding has length 2, not 1 (`retrieval index` writes L2-normalised vectors)",
    ),
    "vector-zero": (lambda t: with_vector(t, np.zeros_like), "embedding is all zeros"),
    "vector-nan": (
        lambda t: with_vector(t, lambda v: np.where(np.arange(v.size) == 7, np.nan, v)),
        "embedding holds NaN or infinite values",
    ),
    "vector-null": (lambda t: with_value(t, "embedding", None), "embedding is missing (null)"),
}


@pytest.mark.parametrize("case", list(ROW_CASES))
def test_parquet_row_that_index_could_not_have_written_is_refused(
    exported, tmp_path: Path, case: str
) -> None:
    change, problem = ROW_CASES[case]
    table = pq.read_table(exported["parquet"])
    real_path = table["path"][ROW].as_py()
    bad = tmp_path / "rows.parquet"
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), bad)
    stderr = refused([bad], tmp_path / "new")
    assert stderr == f"error: {bad} row {ROW}: {problem.format(path=real_path)}; {NOTHING}\n"


# -- parquet: the schema and the manifest ---------------------------------------------------------


def with_manifest(table: pa.Table, change: Callable[[dict], object]) -> pa.Table:
    meta = dict(table.schema.metadata)
    changed = change(json.loads(meta[b"retrieval.manifest"]))
    meta[b"retrieval.manifest"] = changed if isinstance(changed, bytes) else json.dumps(changed)
    return table.replace_schema_metadata(meta)


def with_weights(**weights: object) -> Callable[[dict], dict]:
    return lambda manifest: {**manifest, "weights": weights}


def cast_embedding(value_type: pa.DataType) -> Callable[[pa.Table], pa.Table]:
    def change(table: pa.Table) -> pa.Table:
        kind = pa.list_(value_type, table.schema.field("embedding").type.list_size)
        rows = np.array(table["embedding"].to_pylist())
        if pa.types.is_integer(value_type):
            rows = np.rint(rows * 100)
        column = pa.array(rows.astype(value_type.to_pandas_dtype()).tolist(), type=kind)
        index = table.schema.get_field_index("embedding")
        changed = table.set_column(index, pa.field("embedding", kind), column)
        return changed.replace_schema_metadata(table.schema.metadata)

    return change


HEADER_CASES = {
    "embedding-float64": (
        cast_embedding(pa.float64()),
        "its embedding column holds double values, but `retrieval export` writes float32 vectors",
    ),
    "embedding-int64": (
        cast_embedding(pa.int64()),
        "its embedding column holds int64 values, but `retrieval export` writes float32 vectors",
    ),
    "weights-file-outside": (
        lambda t: with_manifest(
            t, with_weights(source="file", path="../../../etc/passwd", identity="0" * 64)
        ),
        "the manifest names the weights file '../../../etc/passwd', which is not an absolute, "
        "normalised path",
    ),
    "weights-sha256-not-hex": (
        lambda t: with_manifest(
            t, with_weights(source="pretrained", path=None, identity="timm/x", sha256="zz")
        ),
        "the manifest gives a weights checksum that is not a SHA-256 (64 hex digits)",
    ),
    "weights-source-unknown": (
        lambda t: with_manifest(t, with_weights(source="magic", path=None, identity="0")),
        "the manifest gives the weights source 'magic'; it must be one of pretrained, file, "
        "untrained",
    ),
    "weights-path-for-untrained": (
        lambda t: with_manifest(t, with_weights(source="untrained", path="/w.pt", identity="0")),
        "the manifest names a weights file for untrained weights",
    ),
    "dim-differs": (
        lambda t: with_manifest(t, lambda m: {**m, "dim": 95}),
        "it holds 96-d embeddings but its manifest says 95-d",
    ),
    "model-metadata-differs": (
        lambda t: t.replace_schema_metadata({**t.schema.metadata, b"model": b"resnet50"}),
        "its schema metadata gives model 'resnet50' but its manifest test_resnet",
    ),
    "dim-zero": (
        lambda t: with_manifest(t, lambda m: {**m, "dim": 0}),
        "the manifest gives dim 0; it must be a whole number from 1 to 65536",
    ),
    "preprocess-mean-text": (
        lambda t: with_manifest(
            t, lambda m: {**m, "preprocess": {**m["preprocess"], "mean": "abc"}}
        ),
        "the manifest gives preprocess mean 'abc'; it must be 3 finite numbers",
    ),
    "manifest-a-list": (
        lambda t: with_manifest(t, lambda m: [m]),
        "the manifest is a JSON list, not an object",
    ),
    "manifest-not-json": (
        lambda t: with_manifest(t, lambda m: b"{not json"),
        "its manifest is not valid JSON",
    ),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_parquet_header_that_export_could_not_have_written_is_refused(
    exported, tmp_path: Path, case: str
) -> None:
    change, problem = HEADER_CASES[case]
    bad = tmp_path / "header.parquet"
    pq.write_table(change(pq.read_table(exported["parquet"])), bad)
    assert refused([bad], tmp_path / "new") == f"error: {bad}: {problem}; {NOTHING}\n"


@pytest.mark.parametrize("where", ["middle", "footer"])
def test_bit_flipped_parquet_is_one_line(exported, tmp_path: Path, where: str) -> None:
    data = bytearray(exported["parquet"].read_bytes())
    start = len(data) // 2 if where == "middle" else len(data) - 200
    for i in range(start, start + 64):
        data[i] ^= 0xFF
    bad = tmp_path / "flipped.parquet"
    bad.write_bytes(bytes(data))
    assert refused([bad], tmp_path / "new").startswith(f"error: {bad}")


# -- npy + sidecar ------------------------------------------------------------------------------


def npy_pair(exported: dict[str, Path], folder: Path, matrix=None, sidecar=None) -> Path:
    """A copy of the npy export in `folder`, its matrix and/or sidecar replaced."""
    npy = folder / "rows.npy"
    np.save(npy, np.load(exported["npy"]) if matrix is None else matrix)
    original = json.loads(exported["npy"].with_suffix(".rows.json").read_text())
    text = json.dumps(original if sidecar is None else sidecar(original))
    (folder / "rows.rows.json").write_text(text)
    return npy


def with_row(row: dict) -> Callable[[dict], dict]:
    def change(sidecar: dict) -> dict:
        rows = list(sidecar["rows"])
        rows[ROW] = row
        return {**sidecar, "rows": rows}

    return change


def test_npy_matrix_types_export_never_writes_are_refused(exported, tmp_path: Path) -> None:
    xb = np.load(exported["npy"])
    for name, matrix in {
        "complex64": xb.astype(np.complex64) + 1j,
        "float64": xb.astype(np.float64),
        "int64": np.rint(xb * 100).astype(np.int64),
    }.items():
        npy = npy_pair(exported, tmp_path, matrix=matrix)
        expected = f"it holds {name} values, but `retrieval export` writes float32 vectors"
        assert refused([npy], tmp_path / "new") == f"error: {npy}: {expected}; {NOTHING}\n"


def test_npy_rows_are_checked(exported, tmp_path: Path) -> None:
    side = tmp_path / "rows.rows.json"
    cases = {
        "no-path": (with_row({"id": 1}), f"{side} row {ROW}: it has no path (a string)"),
        "relative": (
            with_row({"id": 1, "path": "a.jpg"}),
            f"{side} row {ROW}: path 'a.jpg' is relative; paths must be absolute",
        ),
        "sidecar-list": (
            lambda s: s["rows"],
            f"{side}: it is a JSON list, not the object export writes",
        ),
        "manifest-list": (
            lambda s: {**s, "manifest": [s["manifest"]]},
            f"{side}: the manifest is a JSON list, not an object",
        ),
    }
    for change, expected in cases.values():
        npy = npy_pair(exported, tmp_path, sidecar=change)
        assert refused([npy], tmp_path / "new") == f"error: {expected}; {NOTHING}\n"

    xb = np.load(exported["npy"])
    xb[ROW] *= 3
    npy = npy_pair(exported, tmp_path, matrix=xb)
    assert refused([npy], tmp_path / "new") == (
        f"error: {npy} row {ROW}: embedding has length 3, not 1 (`retrieval index` writes "
        f"L2-normalised vectors); {NOTHING}\n"
    )


def test_truncated_npy_and_wrong_row_count_are_one_line(exported, tmp_path: Path) -> None:
    npy = npy_pair(exported, tmp_path)
    whole = npy.read_bytes()
    npy.write_bytes(whole[:-100])
    size = len(whole)
    assert refused([npy], tmp_path / "new") == (
        f"error: {npy}: it is {size - 100} bytes long, but its header describes 8 x 96 float32 "
        f"values ({size} bytes with the header): it was cut short or padded; {NOTHING}\n"
    )
    npy.write_bytes(whole[:20])  # inside the header
    stderr = refused([npy], tmp_path / "new")
    assert stderr.startswith(f"error: {npy}: it is not a readable .npy matrix (")

    npy = npy_pair(exported, tmp_path, matrix=np.load(exported["npy"])[:5])
    assert refused([npy], tmp_path / "new").startswith(
        f"error: {npy} holds a (5, 96) matrix but {tmp_path / 'rows.rows.json'} describes 8 rows"
    )


# -- what index itself writes is accepted -------------------------------------------------------


def test_names_with_newlines_and_mtimes_before_1970_round_trip(tmp_path: Path) -> None:
    """`retrieval index` stores any name the OS hands out (a newline is a legal byte) and the
    mtime as stat gives it (negative before 1970): import must accept its own exported."""
    photos = tmp_path / "photos"
    odd = save_image(draw_image(1), photos / "two\nlines.jpg")
    save_image(draw_image(2), photos / "plain.png")
    os.utime(odd, ns=(-86_400 * 10**9, -86_400 * 10**9))  # 1969-12-31
    assert run_cli("index", photos, "--index", tmp_path / "a", *TINY).exit_code == 0
    for fmt in ("parquet", "npy"):
        out = tmp_path / f"all.{fmt}"
        assert (
            run_cli("export", "--index", tmp_path / "a", "--format", fmt, "-o", out).exit_code == 0
        )
        result = run_cli("import", out, "--index", tmp_path / f"b-{fmt}", "--json")
        assert result.exit_code == 0, result.stderr
        assert result.json()["added"] == 2


def test_exports_of_a_float16_index_are_accepted(exported, tmp_path: Path) -> None:
    """float16 storage moves a vector's length off 1 by up to 2^-11: still an export."""
    half = tmp_path / "half"
    result = run_cli("import", exported["parquet"], "--index", half, "--vector-dtype", "float16")
    assert result.exit_code == 0, result.stderr
    for fmt in ("parquet", "npy"):
        out = tmp_path / f"half.{fmt}"
        assert run_cli("export", "--index", half, "--format", fmt, "-o", out).exit_code == 0
        again = run_cli("import", out, "--index", tmp_path / f"copy-{fmt}", "--json")
        assert again.exit_code == 0, again.stderr
        assert again.json()["added"] == 8
