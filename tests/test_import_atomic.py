"""`retrieval import` is all or nothing: every row of every file is checked before any is
written, and a new index that fails while it is written is removed again (no empty index
fixed to a model is left behind)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from test_ann import clustered, make_index, synthetic_manifest
from test_import import stored

from retrieval.errors import ImportFormatError, StorageError
from retrieval.ops import importing
from retrieval.ops.import_checks import NOTHING
from retrieval.store.catalog import Catalog
from retrieval.store.index_dir import IndexDir

BAD_ROW = 5


@pytest.fixture(scope="module")
def files(tiny_index, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """good.parquet (the tiny index's 8 rows), moved.parquet (the same vectors under other
    paths: 8 new rows), bad.parquet (row 5 is all zeros), other.parquet (16-d vectors
    from another model)."""
    out = tmp_path_factory.mktemp("atomic")
    good = out / "good.parquet"
    result = run_cli("export", "--index", tiny_index.directory, "-o", good)
    assert result.exit_code == 0, result.stderr
    table = pq.read_table(good)

    def replaced(column: str, values: list) -> pa.Table:
        field = table.schema.field(column)
        index = table.schema.get_field_index(column)
        changed = table.set_column(index, field, pa.array(values, type=field.type))
        return changed.replace_schema_metadata(table.schema.metadata)

    moved = [p.replace("/photos/", "/moved/") for p in table["path"].to_pylist()]
    pq.write_table(_moved(table, moved), out / "moved.parquet")
    vectors = table["embedding"].to_pylist()
    vectors[BAD_ROW] = [0.0] * len(vectors[BAD_ROW])
    pq.write_table(replaced("embedding", vectors), out / "bad.parquet")
    make_index(out / "other-index", synthetic_manifest(d=16), clustered(20))
    other = out / "other.parquet"
    assert run_cli("export", "--index", out / "other-index", "-o", other).exit_code == 0
    return {
        "good": good,
        "moved": out / "moved.parquet",
        "bad": out / "bad.parquet",
        "other": other,
    }


def _moved(table: pa.Table, paths: list[str]) -> pa.Table:
    metadata = table.schema.metadata
    for column, values in (("path", paths), ("path_bytes", [p.encode() for p in paths])):
        field = table.schema.field(column)
        index = table.schema.get_field_index(column)
        table = table.set_column(index, field, pa.array(values, type=field.type))
    return table.replace_schema_metadata(metadata)


def bad_row_error(files: dict[str, Path]) -> str:
    return f"error: {files['bad']} row {BAD_ROW}: embedding is all zeros; {NOTHING}\n"


def test_a_bad_file_after_a_good_one_imports_nothing(files, tmp_path: Path) -> None:
    index = tmp_path / "index"
    assert run_cli("import", files["good"], "--index", index).exit_code == 0
    paths, xb = stored(index)
    result = run_cli("import", files["moved"], files["bad"], "--index", index)
    assert result.exit_code == 1
    after_paths, after_xb = stored(index)
    assert after_paths == paths  # the 8 rows of moved.parquet were not written
    np.testing.assert_array_equal(after_xb, xb)
    assert result.stderr == bad_row_error(files)
    check = run_cli("check", "--index", index)
    assert check.exit_code == 0, check.stdout + check.stderr


def test_a_failed_import_into_a_new_folder_leaves_no_index(files, tmp_path: Path) -> None:
    target = tmp_path / "new"
    result = run_cli("import", files["good"], files["bad"], "--index", target)
    assert result.exit_code == 1
    assert not target.exists()
    assert result.stderr == bad_row_error(files)
    info = run_cli("info", "--index", target)
    assert info.exit_code == 1
    assert info.stderr == (
        f"error: no index at {target}: build one with `retrieval index --index {target} FOLDER`\n"
    )
    # Not fixed to the refused files' model: another one is welcome.
    other = run_cli("import", files["other"], "--index", target, "--json")
    assert other.exit_code == 0, other.stderr
    assert (other.json()["added"], other.json()["dim"]) == (20, 16)


def failing_store(monkeypatch: pytest.MonkeyPatch, error: BaseException, on_call: int) -> list:
    """Make the `on_call`-th catalogue transaction of imported rows fail with `error` (as a
    full disk or Ctrl-C would), with 3 rows per transaction; returns the calls' row counts."""
    calls: list[int] = []
    real = Catalog.store_many

    def store_many(self, rows):
        calls.append(len(rows))
        if len(calls) == on_call:
            raise error
        return real(self, rows)

    monkeypatch.setattr(importing, "IMPORT_BATCH", 3)
    monkeypatch.setattr(Catalog, "store_many", store_many)
    return calls


def test_a_new_index_that_fails_while_written_is_removed(
    files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = StorageError("could not write the catalogue: no space left on the device")
    calls = failing_store(monkeypatch, full, on_call=2)
    target = tmp_path / "new"
    result = run_cli("import", files["good"], "--index", target)
    assert result.exit_code == 1
    assert result.stderr == (
        "error: could not write the catalogue: no space left on the device; nothing was "
        f"imported (the new index at {target} was removed)\n"
    )
    assert calls == [3, 3]  # the first transaction had committed
    assert os.listdir(target) == ["writer.lock"]  # kept: a waiting writer may hold it open
    assert run_cli("info", "--index", target).stderr.startswith(f"error: no index at {target}")
    monkeypatch.undo()
    other = run_cli("import", files["other"], "--index", target, "--json")
    assert other.exit_code == 0, other.stderr
    assert run_cli("check", "--index", target).exit_code == 0


def test_interrupting_an_import_into_a_new_folder_leaves_no_index(
    files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing_store(monkeypatch, KeyboardInterrupt(), on_call=2)
    target = tmp_path / "new"
    result = run_cli("import", files["good"], "--index", target)
    assert result.exit_code == 130
    assert result.stderr == (
        f"retrieval: interrupted: nothing was imported (the new index at {target} was removed); "
        "run the same command again\n"
    )
    assert os.listdir(target) == ["writer.lock"]


def test_interrupting_an_import_into_an_index_keeps_finished_transactions(
    files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tmp_path / "index"
    assert run_cli("import", files["good"], "--index", index).exit_code == 0
    failing_store(monkeypatch, KeyboardInterrupt(), on_call=2)
    result = run_cli("import", files["moved"], "--index", index)
    assert result.exit_code == 130
    assert result.stderr == (
        "retrieval: interrupted: kept 3 imported embeddings from finished transactions; "
        "importing the same files again replaces them\n"
    )
    monkeypatch.undo()
    assert len(stored(index)[0]) == 11
    again = run_cli("import", files["moved"], "--index", index, "--json")
    assert (again.json()["added"], again.json()["updated"]) == (5, 3)


def test_small_files_share_one_transaction(files, tmp_path: Path) -> None:
    """Rows of several files are batched together: two 8-row files under the batch size are
    one catalogue transaction (after the one that stores the new manifest)."""
    index = tmp_path / "index"
    result = run_cli("import", files["good"], files["moved"], "--index", index, "--json")
    assert result.exit_code == 0, result.stderr
    assert (result.json()["added"], result.json()["updated"]) == (16, 0)
    info = run_cli("info", "--index", index, "--json").json()
    assert info["generation"] == 2


def test_a_file_replaced_between_check_and_write_is_refused(files, tmp_path: Path) -> None:
    """The rows written are the rows checked: a file replaced in between is refused."""
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(files["good"].read_bytes())
    target = tmp_path / "new"
    sources = importing.read_files([str(copy)], str(target))
    replacement = tmp_path / "replacement.parquet"
    replacement.write_bytes(files["bad"].read_bytes())
    os.replace(replacement, copy)
    with IndexDir.open_writer(target) as index_dir:
        with pytest.raises(ImportFormatError) as caught:
            importing.import_files(index_dir, sources)
    assert str(caught.value) == (
        f"{copy} changed after it was checked; nothing was imported; import it again once "
        "nothing writes to it"
    )
    assert os.listdir(target) == ["writer.lock"]
