"""The clip-retrieval layout: folders of .npy shards with row-aligned parquet metadata.

    DIR/img_emb/img_emb_{k}.npy            (n_k, dim) float32 or float16 matrix, C order
    DIR/metadata/metadata_{k}.parquet      n_k rows, row i describing matrix row i: image_path
                                           (text), id, size, mtime_ns, width, height, format,
                                           content_hash (32 hex digits), path_bytes (null
                                           unless the name is not UTF-8: then its raw bytes,
                                           image_path showing them as \\xNN); no embedding
    DIR/manifest.json                      written last: the index manifest, dtype, the shards

This is what clip-retrieval's inference step writes and what embedding-reader's `parquet_npy`
format, autofaiss (`--embeddings DIR/img_emb`) and clip-retrieval's index step read. k is
zero-padded to one width so that a plain sort of the names (embedding-reader sorts them) is
the numeric order. Every file is written aside and renamed into place, and manifest.json comes
last: a folder without it is an unfinished export, and `retrieval import` refuses it.

`ShardWriter` is the one writer: `retrieval export --layout clip-retrieval` and the Ray
engine's `--shards DIR` both use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..defaults import LAYOUT_DTYPES, LAYOUT_SHARD_SIZE
from ..errors import StorageError, UsageError
from ..pathnames import decoded, display
from ..store.files import atomic_write
from ..store.manifest import Manifest

LAYOUT = "clip-retrieval"
LAYOUT_VERSION = 1
MANIFEST_NAME = "manifest.json"
EMBEDDINGS_FOLDER, METADATA_FOLDER = "img_emb", "metadata"
#: Digits of k when the number of rows is not known in advance (100,000 shards at most).
DEFAULT_DIGITS = 5
#: The metadata columns, in order (image_path first: clip-retrieval's name for the file).
METADATA_COLUMNS = (
    "image_path",
    "id",
    "size",
    "mtime_ns",
    "width",
    "height",
    "format",
    "content_hash",
    "path_bytes",
)


def shard_names(k: int, digits: int) -> tuple[str, str]:
    """(embeddings, metadata) paths of shard `k`, relative to the layout folder."""
    tag = str(k).zfill(digits)
    return (
        f"{EMBEDDINGS_FOLDER}/{EMBEDDINGS_FOLDER}_{tag}.npy",
        f"{METADATA_FOLDER}/{METADATA_FOLDER}_{tag}.parquet",
    )


def metadata_schema() -> Any:
    """The pyarrow schema of a metadata shard."""
    import pyarrow as pa

    return pa.schema(
        [
            ("image_path", pa.string()),
            ("id", pa.int64()),
            ("size", pa.int64()),
            ("mtime_ns", pa.int64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("format", pa.string()),
            ("content_hash", pa.string()),
            ("path_bytes", pa.binary()),
        ]
    )


@dataclass(frozen=True)
class LayoutSummary:
    """What a `ShardWriter` wrote: rows, dim, dtype, and the files (manifest.json last)."""

    directory: str
    rows: int
    dim: int
    dtype: str
    files: tuple[str, ...]


class ShardWriter:
    """Writes rows and their vectors into the clip-retrieval layout at `directory`.

    `write(rows, xb)` appends: `rows` are objects with the attributes path (bytes), size,
    mtime_ns, width, height, format, content_hash (bytes or None) and optionally id (a
    catalogue row or a `NewRow`); `xb` is their (len(rows), dim) float32 matrix of unit
    vectors. A shard is written each time `shard_size` rows are buffered (memory: shard_size x
    dim x 4 bytes). `close()` writes the last shard and manifest.json. Used as a context
    manager, an exception skips manifest.json: the folder then reads as unfinished.

    `directory` must be new or empty. `expected_rows`, when known, sets the digits of k as
    clip-retrieval does (the digits of the shard count); otherwise DEFAULT_DIGITS.
    """

    def __init__(
        self,
        directory: str,
        manifest: Manifest,
        *,
        shard_size: int = LAYOUT_SHARD_SIZE,
        dtype: str = "float32",
        expected_rows: int | None = None,
    ) -> None:
        if dtype not in LAYOUT_DTYPES:
            raise UsageError(f"unknown dtype {dtype!r}; use one of {', '.join(LAYOUT_DTYPES)}")
        if shard_size < 1:
            raise UsageError(f"--shard-size must be at least 1 (got {shard_size})")
        self.directory = os.path.abspath(directory)
        self.manifest, self.shard_size, self.dtype = manifest, shard_size, dtype
        if expected_rows is None:
            self.digits = DEFAULT_DIGITS
        else:
            self.digits = len(str(max(1, -(-expected_rows // shard_size))))
        self._rows: list[Any] = []
        self._xb: list[np.ndarray] = []
        self._buffered = 0
        self._shards: list[dict[str, Any]] = []
        self._files: list[str] = []
        self._closed = False
        _prepare(self.directory)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None and not self._closed:
            self.close()

    def write(self, rows: Sequence[Any], xb: np.ndarray) -> None:
        """Append `rows` and their (len(rows), dim) vectors `xb`."""
        if self._closed:
            raise RuntimeError("write() after close()")
        xb = np.asarray(xb, dtype=np.float32)
        dim = self.manifest.dim
        if xb.shape != (len(rows), dim):
            raise ValueError(f"xb is {xb.shape}, expected ({len(rows)}, {dim})")
        self._rows.extend(rows)
        self._xb.append(xb)
        self._buffered += len(rows)
        while self._buffered >= self.shard_size:
            self._flush(self.shard_size)

    def close(self) -> LayoutSummary:
        """Write the last (partial) shard and manifest.json; return what was written."""
        if not self._closed:
            if self._buffered:
                self._flush(self._buffered)
            self._closed = True
            self._write_manifest()
        rows = sum(s["rows"] for s in self._shards)
        return LayoutSummary(
            self.directory, rows, self.manifest.dim, self.dtype, tuple(self._files)
        )

    def _flush(self, n: int) -> None:
        """Write the first `n` buffered rows as the next shard."""
        xb = np.concatenate(self._xb) if len(self._xb) > 1 else self._xb[0]
        rows, self._rows = self._rows[:n], self._rows[n:]
        head, rest = xb[:n], xb[n:]
        self._xb = [rest] if len(rest) else []
        self._buffered -= n
        k = len(self._shards)
        if len(str(k)) > self.digits:
            raise StorageError(
                f"{display(os.fsencode(self.directory))}: more than {10**self.digits} shards "
                "would break their name order; use a larger --shard-size"
            )
        npy, parquet = shard_names(k, self.digits)
        matrix = np.ascontiguousarray(head, dtype=np.dtype(self.dtype).newbyteorder("<"))
        self._write_file(npy, lambda fh: np.save(fh, matrix, allow_pickle=False), "shard")
        table = _metadata_table(rows)
        self._write_file(parquet, lambda fh: _write_parquet(table, fh), "metadata shard")
        self._shards.append({"embeddings": npy, "metadata": parquet, "rows": n})

    def _write_manifest(self) -> None:
        text = json.dumps(
            {
                "layout": LAYOUT,
                "layout_version": LAYOUT_VERSION,
                "model": self.manifest.model.name,
                "dim": self.manifest.dim,
                "dtype": self.dtype,
                "normalized": True,
                "metric": self.manifest.metric,
                "rows": sum(s["rows"] for s in self._shards),
                "shards": self._shards,
                "manifest": self.manifest.portable().to_dict(),
            },
            indent=1,
        ).encode("utf-8")
        self._write_file(MANIFEST_NAME, lambda fh: fh.write(text), "layout manifest")

    def _write_file(self, relative: str, write: Any, what: str) -> None:
        path = os.path.join(self.directory, relative)
        atomic_write(path, write, what)
        self._files.append(path)


def _prepare(directory: str) -> None:
    """Create `directory` and its two folders; refuse one that already holds files."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"{display(os.fsencode(directory))} is a file; give -o a folder name")
    if os.path.isdir(directory) and any(_files_under(directory)):
        raise UsageError(
            f"{display(os.fsencode(directory))} already holds files; a layout export writes "
            "into a new or empty folder: remove it or choose another -o"
        )
    try:
        for folder in (EMBEDDINGS_FOLDER, METADATA_FOLDER):
            os.makedirs(os.path.join(directory, folder), exist_ok=True)
    except OSError as exc:
        raise StorageError(f"could not create {directory}: {exc.strerror or exc}") from None


def _files_under(directory: str) -> Any:
    for _root, _dirs, files in os.walk(directory):
        yield from files


def _metadata_table(rows: Sequence[Any]) -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "image_path": [decoded(r.path) for r in rows],
            "id": [getattr(r, "id", None) for r in rows],
            "size": [r.size for r in rows],
            "mtime_ns": [r.mtime_ns for r in rows],
            "width": [r.width for r in rows],
            "height": [r.height for r in rows],
            "format": [r.format for r in rows],
            "content_hash": [
                None if r.content_hash is None else r.content_hash.hex() for r in rows
            ],
            "path_bytes": [None if _is_utf8(r.path) else r.path for r in rows],
        },
        schema=metadata_schema(),
    )


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _write_parquet(table: Any, fh: BinaryIO) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, fh)
