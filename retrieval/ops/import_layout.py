"""Reading a clip-retrieval layout folder (see `layout`) for an import.

manifest.json is read first (a folder without it is an unfinished export); then each shard
it lists is checked before any row is read: the .npy header (shape, dtype, C order), its
exact length (a truncated shard is refused), and its parquet's row count. Rows then stream
a shard slice at a time through the same checks as a parquet import (`import_sources`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..defaults import LAYOUT_DTYPES
from ..errors import ImportFormatError
from ..store.catalog import NewRow
from . import import_checks as checks
from . import layout
from .import_npy import npy_header
from .import_sources import (
    Source,
    int_checks,
    manifest_from,
    meta_checks,
    paths_column,
    raise_first,
    reason,
    stamp,
)

_SHARD = re.compile(r"(img_emb/img_emb|metadata/metadata)_[0-9]{1,9}\.(npy|parquet)")


@dataclass(frozen=True)
class _Shard:
    npy: str
    parquet: str
    rows: int
    offset: int  # where the .npy data starts


def is_layout(path: str) -> bool:
    """Whether `path` is a folder in the clip-retrieval layout (or meant to be one)."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, name))
        for name in (layout.MANIFEST_NAME, layout.EMBEDDINGS_FOLDER, layout.METADATA_FOLDER)
    )


def layout_source(directory: str) -> Source:
    """Read and check manifest.json and every shard's header under `directory`."""
    info = _read_manifest(directory)
    where = os.path.join(directory, layout.MANIFEST_NAME)
    manifest = manifest_from(info.get("manifest"), where)
    dtype = info.get("dtype")
    if dtype not in LAYOUT_DTYPES:
        raise checks.refuse(where, f"its dtype {dtype!r} is not one of {', '.join(LAYOUT_DTYPES)}")
    for key, value in (("model", manifest.model.name), ("dim", manifest.dim)):
        if info.get(key) != value:
            raise checks.refuse(
                where, f"it gives {key} {info.get(key)!r} but its manifest {value!r}"
            )
    shards = [_check_shard(directory, entry, manifest.dim, dtype, where) for entry in _listed(info)]
    _refuse_unlisted(directory, shards, where)
    total = sum(s.rows for s in shards)
    if info.get("rows") != total:
        raise checks.refuse(
            where, f"it gives {info.get('rows')!r} rows but its shards hold {total}"
        )
    item = np.dtype(dtype).itemsize

    def batches(size: int) -> Iterator[list[NewRow]]:
        for shard in shards:
            yield from _shard_rows(shard, manifest.dim, item, size)

    return Source(directory, manifest, total, batches, stamp(directory))


def _read_manifest(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, layout.MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
    except FileNotFoundError:
        raise ImportFormatError(
            f"{directory} has no {layout.MANIFEST_NAME}: an unfinished export (it is written "
            "last) or not a `retrieval export --layout clip-retrieval` folder; nothing was "
            "imported; export it again"
        ) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise checks.refuse(path, f"it cannot be read as JSON ({reason(exc)})") from None
    if not isinstance(info, dict) or info.get("layout") != layout.LAYOUT:
        raise checks.refuse(path, f"it does not describe a {layout.LAYOUT} layout")
    return info


def _listed(info: dict[str, Any]) -> list[dict[str, Any]]:
    shards = info.get("shards")
    if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
        raise ImportFormatError(f"{layout.MANIFEST_NAME} has no list of shards; {checks.NOTHING}")
    return shards


def _check_shard(directory: str, entry: dict[str, Any], dim: int, dtype: str, where: str) -> _Shard:
    names = entry.get("embeddings"), entry.get("metadata")
    rows = entry.get("rows")
    for name in names:
        if not isinstance(name, str) or not _SHARD.fullmatch(name):
            raise checks.refuse(where, f"it lists a shard file {name!r} outside the layout")
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise checks.refuse(where, f"it gives {rows!r} rows for {names[0]}")
    npy, parquet = (os.path.join(directory, str(n)) for n in names)
    for path in (npy, parquet):
        if not os.path.isfile(path):
            raise ImportFormatError(
                f"{path} is missing but {layout.MANIFEST_NAME} lists it; {checks.NOTHING}"
            )
    item = np.dtype(dtype).itemsize
    shape, offset = npy_header(npy, ("<f2",) if item == 2 else ("<f4",))  # as manifest.json says
    if len(shape) != 2 or shape[1] != dim:
        raise checks.refuse(npy, f"it holds a {shape} matrix, not (rows, {dim})")
    expected = offset + shape[0] * dim * item
    actual = os.path.getsize(npy)
    if actual != expected:
        raise checks.refuse(
            npy,
            f"it is {actual} bytes long, but its header describes {shape[0]} x {dim} {dtype} "
            f"values ({expected} bytes with the header): it was cut short or padded",
        )
    meta_rows = _parquet_rows(parquet)
    if shape[0] != meta_rows:
        raise ImportFormatError(
            f"{npy} holds {shape[0]} rows but {parquet} holds {meta_rows}: a shard's vectors "
            f"and metadata must be row-aligned; {checks.NOTHING}"
        )
    if rows != meta_rows:
        raise checks.refuse(where, f"it gives {rows} rows for {names[0]}, which holds {meta_rows}")
    return _Shard(npy, parquet, rows, offset)


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise checks.refuse(path, f"it is not a readable parquet file ({reason(exc)})") from None


def _refuse_unlisted(directory: str, shards: list[_Shard], where: str) -> None:
    """Readers of the layout take every .npy in img_emb/: a stray one would shift the rows."""
    listed = {s.npy for s in shards} | {s.parquet for s in shards}
    if len(listed) != 2 * len(shards):
        raise checks.refuse(where, "it lists a shard file twice")
    for folder, suffix in (
        (layout.EMBEDDINGS_FOLDER, ".npy"),
        (layout.METADATA_FOLDER, ".parquet"),
    ):
        base = os.path.join(directory, folder)
        for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            path = os.path.join(base, name)
            if name.endswith(suffix) and path not in listed:
                raise checks.refuse(
                    path, f"it is not listed in {where}, and readers of the layout would take it"
                )


def _shard_rows(shard: _Shard, dim: int, item: int, size: int) -> Iterator[list[NewRow]]:
    import pyarrow.parquet as pq

    kind = "<f2" if item == 2 else "<f4"
    parquet = pq.ParquetFile(shard.parquet, pre_buffer=False)
    wanted = [c for c in layout.METADATA_COLUMNS if c in parquet.schema_arrow.names]
    if "image_path" not in wanted:
        raise checks.refuse(shard.parquet, "it has no image_path column")
    start = 0
    with open(shard.npy, "rb") as fh:
        for batch in parquet.iter_batches(batch_size=size, columns=wanted):
            n = batch.num_rows
            fh.seek(shard.offset + start * dim * item)
            data = fh.read(n * dim * item)
            if len(data) != n * dim * item:
                raise checks.refuse(
                    shard.npy, f"it ends inside row {start + len(data) // dim // item}"
                )
            xb = np.frombuffer(data, dtype=kind).reshape(n, dim).astype(np.float32)
            yield _rows(batch, xb, shard, start)
            start += n


def _rows(batch: Any, xb: np.ndarray, shard: _Shard, first: int) -> list[NewRow]:
    """One metadata batch and its vectors as NewRows, refused at the first bad row."""
    cols = dict(zip(batch.schema.names, batch.columns, strict=True))
    cols["content_hash"], hash_check = _hex_hashes(cols.get("content_hash"))
    norms, vector_checks = checks.vector_checks(xb)
    paths, path_check = paths_column(_raw_paths(cols), cols["image_path"])
    where = f"{shard.parquet} (with {os.path.basename(shard.npy)})"
    found = checks.first_bad(
        [path_check, hash_check, *vector_checks, *int_checks(cols), *meta_checks(cols)]
    )
    raise_first(found, where, first)
    xb = checks.unit_length(xb, norms)
    n = len(xb)

    def column(name: str) -> list[Any]:
        return cols[name].to_pylist() if cols.get(name) is not None else [None] * n

    sizes, mtimes, widths = column("size"), column("mtime_ns"), column("width")
    heights, formats, hashes = column("height"), column("format"), column("content_hash")
    return [
        NewRow(
            paths[i],
            sizes[i] or 0,
            mtimes[i] or 0,
            hashes[i],
            widths[i],
            heights[i],
            formats[i],
            xb[i],
            None,
        )
        for i in range(n)
    ]


def _raw_paths(cols: dict[str, Any]) -> Any:
    """Each row's name as bytes: path_bytes where set (a name that is not UTF-8), else
    image_path encoded (`paths_column` then checks that image_path shows that name)."""
    import pyarrow as pa

    texts = cols["image_path"].to_pylist()
    raws = cols["path_bytes"].to_pylist() if cols.get("path_bytes") is not None else []
    out = [
        raw if raw is not None else (None if text is None else text.encode("utf-8"))
        for text, raw in zip(texts, raws or [None] * len(texts), strict=True)
    ]
    return pa.array(out, pa.binary())


def _hex_hashes(column: Any) -> tuple[Any, tuple[np.ndarray, Any]]:
    """(the hex content_hash column as binary, a check for values that are not hex)."""
    import pyarrow as pa

    if column is None:
        return None, (np.zeros(0, dtype=bool), None)
    values = column.to_pylist()
    out: list[bytes | None] = []
    bad = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        try:
            out.append(None if value is None else bytes.fromhex(value))
        except (ValueError, TypeError):
            bad[i] = True
            out.append(None)
    return pa.array(out, pa.binary()), (
        bad,
        lambda i: f"content_hash {checks.shown(str(values[i]))} is not hexadecimal",
    )
