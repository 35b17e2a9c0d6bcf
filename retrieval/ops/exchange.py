"""Embeddings out of (and into) an index: .npy + sidecar, or one parquet file.

npy:     OUT.npy, an (N, dim) float32 matrix, and OUT.rows.json beside it:
         {"manifest": {...}, "model": str, "dim": int, "rows": [{"id", "path"}, ...]}
         where rows[i] describes matrix row i.
parquet: columns id, path, path_bytes, embedding (fixed-size list of float32), size,
         mtime_ns, width, height, format, content_hash; the manifest, model and dim in the
         schema metadata.
Both are written to temporary files and renamed into place.

`import_files` reads either back into an index (a new one takes the file's manifest). Imported
rows need no image file: they keep the exported path, size, mtime and content hash (npy exports
carry only paths: size and mtime are stored as 0, so a later `retrieval index` over a folder
that holds the file re-embeds it, and drops the row if the file is not there).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..defaults import CATALOG_FILE
from ..errors import ImportFormatError, IndexIncompatible, Interrupted, StorageError, UsageError
from ..pathnames import decoded, display, to_str
from ..store.catalog import NewRow
from ..store.files import atomic_write, describe_os_error, fsync_dir, temp_name
from ..store.index_dir import IndexDir
from ..store.manifest import Manifest

FORMATS = ("npy", "parquet")


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: rows, dim, and the files."""

    rows: int
    dim: int
    files: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "dim": self.dim, "files": list(self.files)}


def sidecar_path(npy_path: str) -> str:
    base = npy_path[:-4] if npy_path.endswith(".npy") else npy_path
    return base + ".rows.json"


def export(index_dir: IndexDir, out: str | BinaryIO, fmt: str) -> ExportReport:
    """Write every stored vector to `out` in format `fmt` ('npy' or 'parquet').

    `out` is a file name, or an open binary stream (parquet only: npy is two files). A file
    in an index folder (this one or another, symlinks resolved) is refused.
    """
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
    folder = os.path.dirname(out)
    if not os.path.isdir(folder):
        raise UsageError(f"the folder {folder} does not exist; create it or choose another -o")
    _refuse_index_folder(index_dir, out)
    if fmt == "npy":
        return _export_npy(index_dir, out)
    return _export_parquet(index_dir, out)


def _refuse_index_folder(index_dir: IndexDir, out: str) -> None:
    """Raise UsageError when `out` (or, for npy, its sidecar) would land in an index folder:
    replacing catalog.sqlite there destroyed the index. Symlinks are resolved first."""
    own = os.path.realpath(index_dir.directory)
    for path in (out, sidecar_path(out)):
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
        "manifest": manifest.to_dict(),
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
            "retrieval.manifest": json.dumps(manifest.to_dict()),
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


# -- import -----------------------------------------------------------------------------------

#: Rows per catalogue transaction during an import (an interruption loses at most one).
IMPORT_BATCH = 20_000


@dataclass(frozen=True)
class ImportReport:
    """What an import stored: new rows, rows that replaced a stored path, the files read."""

    added: int
    updated: int
    dim: int
    files: tuple[str, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "dim": self.dim,
            "files": list(self.files),
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        return (
            f"imported {self.added + self.updated} embeddings ({self.dim}-d): {self.added} added, "
            f"{self.updated} replaced a stored path, from {len(self.files)} file(s) "
            f"in {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class _Source:
    path: str
    manifest: Manifest
    rows: int
    batches: Callable[[int], Iterator[list[NewRow]]]


def open_source(path: str) -> _Source:
    """Read the header of an export (.parquet, or .npy with its .rows.json); no rows yet."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise UsageError(f"{path} does not exist; give the files `retrieval export` wrote")
    if path.endswith(".npy"):
        return _npy_source(path)
    return _parquet_source(path)


def _manifest_from(raw: Any, path: str) -> Manifest:
    if not raw:
        raise ImportFormatError(
            f"{path} carries no retrieval manifest (model, weights, dim); only files written "
            "by `retrieval export` can be imported"
        )
    try:
        return Manifest.from_dict(json.loads(raw) if isinstance(raw, (str, bytes)) else raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise ImportFormatError(f"{path} has an unreadable manifest ({exc})") from None


def _parquet_source(path: str) -> _Source:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # pre_buffer would keep every row group read so far in memory (the whole file).
        parquet = pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowException, OSError) as exc:
        raise ImportFormatError(
            f"{path} is not a parquet file ({exc}); import .parquet files, or .npy files with "
            "their .rows.json sidecar"
        ) from None
    meta = parquet.schema_arrow.metadata or {}
    manifest = _manifest_from(meta.get(b"retrieval.manifest"), path)
    names = set(parquet.schema_arrow.names)
    if "embedding" not in names or not names & {"path", "path_bytes"}:
        raise ImportFormatError(f"{path} lacks the columns embedding and path_bytes (or path)")
    width = getattr(parquet.schema_arrow.field("embedding").type, "list_size", manifest.dim)
    if width != manifest.dim:
        raise ImportFormatError(
            f"{path} holds {width}-d embeddings but its manifest says {manifest.dim}-d"
        )
    wanted = [
        c
        for c in ("path", "path_bytes", "embedding", "size", "mtime_ns", "width", "height")
        + ("format", "content_hash")
        if c in names
    ]

    def batches(size: int) -> Iterator[list[NewRow]]:
        for batch in parquet.iter_batches(batch_size=size, columns=wanted):
            yield _parquet_rows(batch, manifest.dim, path)

    return _Source(path, manifest, parquet.metadata.num_rows, batches)


def _parquet_rows(batch: Any, dim: int, path: str) -> list[NewRow]:
    n = batch.num_rows
    names = batch.schema.names
    flat = batch.column(names.index("embedding")).flatten().to_numpy(zero_copy_only=False)
    if flat.size != n * dim:
        raise ImportFormatError(f"{path}: embeddings are not {dim}-d as its manifest says")
    xb = _checked(flat.reshape(n, dim), path)

    def column(name: str) -> list[Any]:
        return batch.column(names.index(name)).to_pylist() if name in names else [None] * n

    if "path_bytes" in names:
        paths = column("path_bytes")
    else:
        paths = [os.fsencode(p) for p in column("path")]
    sizes, mtimes = column("size"), column("mtime_ns")
    widths, heights = column("width"), column("height")
    formats, hashes = column("format"), column("content_hash")
    return [
        NewRow(
            path=paths[i],
            size=sizes[i] or 0,
            mtime_ns=mtimes[i] or 0,
            content_hash=hashes[i],
            width=widths[i],
            height=heights[i],
            format=formats[i],
            vector=xb[i],
            error=None,
        )
        for i in range(n)
    ]


def _npy_source(path: str) -> _Source:
    side = sidecar_path(path)
    try:
        with open(side, encoding="utf-8") as fh:
            sidecar = json.load(fh)
    except FileNotFoundError:
        raise ImportFormatError(
            f"{path} has no sidecar {side}; import the .npy together with the .rows.json "
            "that `retrieval export --format npy` wrote beside it"
        ) from None
    except (OSError, ValueError) as exc:
        raise ImportFormatError(f"cannot read {side}: {exc}") from None
    manifest = _manifest_from(sidecar.get("manifest"), side)
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ImportFormatError(f"{path} is not a .npy matrix ({exc})") from None
    rows = sidecar.get("rows") or []
    if matrix.ndim != 2 or matrix.shape[1] != manifest.dim or matrix.shape[0] != len(rows):
        raise ImportFormatError(
            f"{path} holds a {matrix.shape} matrix but {side} describes {len(rows)} rows of "
            f"{manifest.dim}-d vectors; export them again"
        )

    def batches(size: int) -> Iterator[list[NewRow]]:
        for start in range(0, len(rows), size):
            xb = _checked(np.asarray(matrix[start : start + size]), path)
            yield [
                NewRow(os.fsencode(row["path"]), 0, 0, None, None, None, None, vector, None)
                for row, vector in zip(rows[start : start + size], xb, strict=True)
            ]

    return _Source(path, manifest, len(rows), batches)


def _checked(xb: np.ndarray, path: str) -> np.ndarray:
    """Finite, L2-normalised float32 rows (rows already unit length are kept bit for bit)."""
    xb = np.asarray(xb, dtype=np.float32)
    norms = np.linalg.norm(xb, axis=1)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise ImportFormatError(f"{path} holds embeddings that are zero, NaN or infinite")
    off = np.abs(norms - 1) > 1e-4
    if off.any():
        xb = xb.copy()
        xb[off] /= norms[off, None]
    return xb


def check_source(manifest: Manifest, source: _Source, directory: str) -> None:
    """Refuse a file whose vectors come from another model, weights or dimension."""
    mine, theirs = manifest.model, source.manifest.model
    same = (
        mine.name == theirs.name
        and mine.dim == theirs.dim
        and mine.weights.source == theirs.weights.source
        and mine.weights.identity == theirs.weights.identity
    )
    if not same:
        raise IndexIncompatible(
            f"{source.path} holds {theirs.dim}-d vectors from {theirs.name} "
            f"({theirs.weights.describe()}), but the index at {directory} holds {mine.dim}-d "
            f"vectors from {mine.name} ({mine.weights.describe()}); import it into a new "
            f"index instead: `retrieval import {source.path} --index NEW_DIR`"
        )


def import_files(
    index_dir: IndexDir,
    files: Sequence[str],
    configure: Callable[[Manifest, bool], Manifest] = lambda manifest, new: manifest,
    batch: int = IMPORT_BATCH,
) -> ImportReport:
    """Add the embeddings in `files` (exports) to an index open for writing.

    Every file is checked before anything is written. A new index takes the first file's
    manifest, passed through `configure(manifest, new=True)` (index type, dtype); an existing
    one goes through `configure(manifest, False)`. One transaction per `batch` rows.
    """
    started = time.monotonic()
    if not files:
        raise UsageError("give at least one file to import")
    sources = [open_source(f) for f in files]
    current = index_dir.manifest
    new = current is None
    reference = sources[0].manifest if current is None else current
    for source in sources:
        check_source(reference, source, index_dir.directory)
    updated_manifest = configure(reference, new)
    if new or updated_manifest != current:
        index_dir.set_manifest(updated_manifest)
    added = updated = 0
    try:
        for source in sources:
            for rows in source.batches(batch):
                a, u = index_dir.catalog.store_many(rows)
                added, updated = added + a, updated + u
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: kept {added + updated} imported embeddings from finished batches; "
            "importing the same files again replaces them"
        ) from None
    index_dir.sync_vectors()
    return ImportReport(
        added,
        updated,
        reference.dim,
        tuple(s.path for s in sources),
        time.monotonic() - started,
    )


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
