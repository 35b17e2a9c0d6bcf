"""Embeddings out of (and into) an index: .npy + sidecar, or one parquet file.

npy:     OUT.npy, an (N, dim) float32 matrix, and OUT.rows.json beside it:
         {"manifest": {...}, "model": str, "dim": int, "rows": [{"id", "path"}, ...]}
         where rows[i] describes matrix row i.
parquet: columns id, path, path_bytes, embedding (fixed-size list of float32), size,
         mtime_ns, width, height, format, content_hash; the manifest, model and dim in the
         schema metadata.
Both are written to temporary files and renamed into place.
clip-retrieval layout (`layout="clip-retrieval"`): a folder of .npy shards and row-aligned
         parquet metadata, described in `layout` (what embedding-reader and autofaiss read).

`importing` reads either back into an index.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..defaults import CATALOG_FILE, EXPORT_FORMATS, EXPORT_LAYOUTS, LAYOUT_SHARD_SIZE
from ..errors import StorageError, UsageError
from ..pathnames import decoded, display, to_str
from ..reports import JsonReport, json_field
from ..store.files import atomic_write, describe_os_error, fsync_dir, temp_name
from ..store.index_dir import IndexDir
from ..store.manifest import Manifest
from . import layout as shard_layout

FORMATS = EXPORT_FORMATS


@dataclass(frozen=True)
class ExportReport(JsonReport):
    """What an export wrote: rows, dim, and the files (for a layout: its folder, and the
    number of .npy shards in it)."""

    rows: int
    dim: int
    files: tuple[str, ...]
    shards: int | None = json_field(None, omit_none=True)  # a layout's; else left out


@dataclass(frozen=True)
class LayoutOptions:
    """How `export` writes: "default" (one file, by format) or "clip-retrieval" (a folder of
    `shard_size`-row .npy shards of `dtype` values, with parquet metadata)."""

    layout: str = "default"
    shard_size: int = LAYOUT_SHARD_SIZE
    dtype: str = "float32"


def sidecar_path(npy_path: str) -> str:
    base = npy_path[:-4] if npy_path.endswith(".npy") else npy_path
    return base + ".rows.json"


def export(
    index_dir: IndexDir,
    out: str | BinaryIO,
    fmt: str,
    options: LayoutOptions | None = None,
) -> ExportReport:
    """Write every stored vector to `out` in format `fmt` ('npy' or 'parquet'), or, with the
    clip-retrieval layout, into the new or empty folder `out` (`fmt` is then not used).

    `out` is a file name, or an open binary stream (parquet only: npy is two files). A file
    in an index folder (this one or another, symlinks resolved) is refused.
    """
    options = options or LayoutOptions()
    if options.layout not in EXPORT_LAYOUTS:
        raise UsageError(
            f"unknown layout {options.layout!r}; use one of {', '.join(EXPORT_LAYOUTS)}"
        )
    if options.layout == shard_layout.LAYOUT:
        if not isinstance(out, str):
            raise UsageError("the clip-retrieval layout writes a folder; give -o a folder name")
        return _export_layout(index_dir, os.path.abspath(out), options)
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not isinstance(out, str):
        if fmt == "npy":
            raise UsageError(
                "npy export writes two files (OUT.npy and OUT.rows.json) and cannot go to "
                "stdout; use --format parquet for stdout, or give -o a file name"
            )
        return _export_parquet(index_dir, out)
    out = os.path.abspath(out)
    if os.path.isdir(out):
        raise UsageError(
            f"{display(os.fsencode(out))} is a folder; give -o a file name "
            "(or --layout clip-retrieval to write a folder of shards)"
        )
    folder = os.path.dirname(out)
    if not os.path.isdir(folder):
        raise UsageError(f"the folder {folder} does not exist; create it or choose another -o")
    refuse_index_folder(index_dir.directory, out, sidecar_path(out) if fmt == "npy" else None)
    if fmt == "npy":
        return _export_npy(index_dir, out)
    return _export_parquet(index_dir, out)


def refuse_index_folder(directory: str, out: str, sidecar: str | None = None) -> None:
    """Raise UsageError when `out` (or its `sidecar`) would land in an index folder, the
    one at `directory` or any other: replacing catalog.sqlite there destroys the index.
    Symlinks are resolved first."""
    own = os.path.realpath(directory)
    for path in (out,) if sidecar is None else (out, sidecar):
        folder = os.path.dirname(os.path.realpath(path))
        if folder == own or os.path.isfile(os.path.join(folder, CATALOG_FILE)):
            raise UsageError(
                f"{display(os.fsencode(out))} is inside the index folder "
                f"{display(os.fsencode(folder))}; writing there could destroy the index: "
                "choose an output outside it"
            )


def _export_npy(index_dir: IndexDir, out: str) -> ExportReport:
    manifest = index_dir.require_manifest()
    dim = manifest.dim
    catalog = index_dir.catalog
    tmp = temp_name(out)
    rows: list[dict[str, Any]] = []
    try:
        with catalog.read() as conn:
            n = catalog.counts(conn)["ok"]
            matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
            for ids, xb in catalog.iter_vectors(conn, dim):
                matrix[len(rows) : len(rows) + len(ids)] = xb
                paths = catalog.paths(conn, ids.tolist())
                rows.extend({"id": int(i), "path": to_str(paths[int(i)])} for i in ids)
            matrix.flush()
            del matrix
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
        fsync_dir(os.path.dirname(out))
    except OSError as exc:
        _discard(tmp)
        raise StorageError(f"could not write {out}: {describe_os_error(exc)}") from None
    except BaseException:
        _discard(tmp)
        raise
    sidecar = {
        "manifest": manifest.portable().to_dict(),
        "model": manifest.model.name,
        "dim": dim,
        "rows": rows,
    }
    text = json.dumps(sidecar).encode("utf-8")
    side = sidecar_path(out)
    atomic_write(side, lambda fh: fh.write(text), "row mapping")
    return ExportReport(len(rows), dim, (out, side))


def parquet_schema(manifest: Manifest) -> Any:
    """The pyarrow schema of a parquet export, with the manifest in its metadata."""
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.int64()),
            ("path", pa.string()),
            ("path_bytes", pa.binary()),
            ("embedding", pa.list_(pa.float32(), manifest.dim)),
            ("size", pa.int64()),
            ("mtime_ns", pa.int64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("format", pa.string()),
            ("content_hash", pa.binary()),
        ],
        metadata={
            "retrieval.manifest": json.dumps(manifest.portable().to_dict()),
            "model": manifest.model.name,
            "dim": str(manifest.dim),
        },
    )


def _export_parquet(index_dir: IndexDir, out: str | BinaryIO) -> ExportReport:
    """To a file (written aside and renamed into place) or straight into a stream."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = index_dir.require_manifest()
    dim = manifest.dim
    schema = parquet_schema(manifest)
    written = 0

    def _write(fh: BinaryIO) -> None:
        nonlocal written
        with pq.ParquetWriter(fh, schema) as writer, index_dir.catalog.read() as conn:
            for rows in index_dir.catalog.metadata_rows(conn):
                vectors = index_dir.catalog.decode([r.vector for r in rows], dim)
                embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)
                table = pa.table(
                    {
                        "id": [r.id for r in rows],
                        "path": [decoded(r.path) for r in rows],
                        "path_bytes": [r.path for r in rows],
                        "embedding": embedding,
                        "size": [r.size for r in rows],
                        "mtime_ns": [r.mtime_ns for r in rows],
                        "width": [r.width for r in rows],
                        "height": [r.height for r in rows],
                        "format": [r.format for r in rows],
                        "content_hash": [r.content_hash for r in rows],
                    },
                    schema=schema,
                )
                writer.write_table(table)
                written += len(rows)

    if isinstance(out, str):
        atomic_write(out, _write, "parquet export")
        return ExportReport(written, dim, (out,))
    _write(out)
    out.flush()
    return ExportReport(written, dim, ("<stream>",))


def _export_layout(index_dir: IndexDir, out: str, options: LayoutOptions) -> ExportReport:
    """Every 'ok' row, in id order, through one `ShardWriter` into the folder `out`."""
    manifest = index_dir.require_manifest()
    refuse_index_folder(index_dir.directory, os.path.join(out, shard_layout.MANIFEST_NAME))
    catalog = index_dir.catalog
    with catalog.read() as conn:
        total = catalog.counts(conn)["ok"]
        writer = shard_layout.ShardWriter(
            out,
            manifest,
            shard_size=options.shard_size,
            dtype=options.dtype,
            expected_rows=total,
        )
        with writer:
            for rows in catalog.metadata_rows(conn, batch=min(options.shard_size, 65536)):
                writer.write(rows, catalog.decode([r.vector for r in rows], manifest.dim))
        summary = writer.close()
    shards = sum(f.endswith(".npy") for f in summary.files)
    return ExportReport(summary.rows, summary.dim, (out,), shards)


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
