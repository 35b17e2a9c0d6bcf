"""Parquet exports that another tool rewrote: the manifest and the column types they lost.

pandas, polars, DuckDB and Hugging Face datasets drop the schema metadata (our manifest) when
they write a table back, and change types on the way: pandas turns the fixed-size embedding
list into a plain list and integer columns with nulls into float64. Such a file is read with
a manifest from elsewhere (`--manifest FILE`, or the target index's after a dimension check),
and its batches are brought back to the types `retrieval export` writes (`conform`) before
the usual row checks; values that do not fit (a fractional width, a 95-value embedding in a
96-d file) are refused like any other bad row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ImportFormatError, UsageError
from ..store.manifest import Manifest
from . import import_checks as checks

#: Columns `retrieval export` writes as integers (pandas may hand them back as float64).
INTEGER_COLUMNS = ("size", "mtime_ns", "width", "height")


@dataclass(frozen=True)
class Fallback:
    """The manifest taken for parquet files that carry none: `origin` says where it came
    from; `given` is True when the user named it (--manifest), False for the index's own."""

    manifest: Manifest
    origin: str
    given: bool


def no_manifest(path: str) -> ImportFormatError:
    return ImportFormatError(
        f"{path} carries no retrieval manifest (model, weights, dim): pandas, polars, DuckDB "
        "and datasets drop it when they rewrite a file; give it with --manifest FILE (the "
        "manifest.json of the index or of a `--layout clip-retrieval` export), or import into "
        "an existing index of the same model"
    )


def read_manifest_file(path: str) -> Fallback:
    """The manifest in the JSON file `path`: an index's manifest.json, a layout export's
    manifest.json or an npy export's .rows.json (both hold it under "manifest")."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise UsageError(f"cannot read --manifest {path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError):
        raise UsageError(f"--manifest {path} is not JSON; give a manifest.json") from None
    if isinstance(data, dict) and isinstance(data.get("manifest"), dict):
        data = data["manifest"]
    return Fallback(checks.check_manifest(data, path), f"--manifest {path}", True)


def notice(path: str, fallback: Fallback) -> str | None:
    """What to tell the user when `path` is read with the index's manifest (not a given one)."""
    if fallback.given:
        return None
    model = fallback.manifest.model
    return (
        f"{path} carries no retrieval manifest (rewritten by another tool?); "
        f"its vectors are taken as {model.name} ({model.dim}-d) like {fallback.origin}: only "
        "their dimension could be checked"
    )


def conforms(name: str, kind: Any) -> bool:
    """Whether `conform` brings column `name` of type `kind` to export's type (then
    `type_problem` checks it; other columns get the strict check of an export)."""
    import pyarrow as pa

    return name == "embedding" or (name in INTEGER_COLUMNS and pa.types.is_floating(kind))


def type_problem(name: str, kind: Any, dim: int) -> str | None:
    """Why `conform` cannot bring column `name` of type `kind` to export's type, or None."""
    import pyarrow as pa

    if name != "embedding":
        return None  # a floating integer column: each value is checked by `conform`
    lists = pa.types.is_list(kind) or pa.types.is_large_list(kind)
    fixed = pa.types.is_fixed_size_list(kind)
    if not (lists or fixed) or not pa.types.is_floating(kind.value_type):
        return f"its embedding column is {kind}, not a list of numbers"
    if fixed and kind.list_size != dim:
        return f"it holds {kind.list_size}-d embeddings but the manifest says {dim}-d"
    return None


def conform(batch: Any, dim: int, where: str, first: int) -> Any:
    """`batch` with its embedding as a fixed-size list of float32 and float integer columns as
    int64, as `retrieval export` writes them; ImportFormatError at the first row that cannot be."""
    import pyarrow as pa

    names = batch.schema.names
    columns = list(batch.columns)
    for i, name in enumerate(names):
        if name == "embedding":
            columns[i] = _embedding(columns[i], dim, where, first)
        elif name in INTEGER_COLUMNS and pa.types.is_floating(columns[i].type):
            columns[i] = _integers(columns[i], name, where, first)
    return pa.RecordBatch.from_arrays(columns, names=names)


def _embedding(column: Any, dim: int, where: str, first: int) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        raise checks.refuse(f"{where} row {first + row}", "embedding is missing (null)")
    if pa.types.is_fixed_size_list(column.type):
        values = column.flatten()
    else:
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        wrong = lengths != dim
        if wrong.any():
            row = int(np.argmax(wrong))
            raise checks.refuse(
                f"{where} row {first + row}",
                f"embedding has {lengths[row]} values but the manifest says {dim}-d",
            )
        values = column.flatten()
    return pa.FixedSizeListArray.from_arrays(values.cast(pa.float32()), dim)


def _integers(column: Any, name: str, where: str, first: int) -> Any:
    import pyarrow as pa

    values = column.to_numpy(zero_copy_only=False).astype(np.float64)
    present = ~np.isnan(values)
    whole = np.zeros(len(values), dtype=bool)
    whole[present] = np.isfinite(values[present]) & (values[present] == np.round(values[present]))
    whole &= np.abs(np.where(present, values, 0)) < 2.0**63
    wrong = present & ~whole
    if wrong.any():
        row = int(np.argmax(wrong))
        raise checks.refuse(
            f"{where} row {first + row}", f"{name} {values[row]} is not a whole number"
        )
    out = np.where(present, values, 0).astype(np.int64)
    return pa.array(out, pa.int64(), mask=~present)
