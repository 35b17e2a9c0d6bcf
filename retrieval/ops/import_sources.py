"""Reading `retrieval export` files for an import, every value checked on the way.

parquet: the manifest from the schema metadata, the columns' types from the schema, then row
         batches (pyarrow reads a row group at a time: memory stays bounded).
npy:     the manifest and row paths from OUT.rows.json, the (N, dim) float32 matrix read
         slice by slice with plain reads (no memory map: a file truncated meanwhile would
         crash the process with SIGBUS instead of raising).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ImportFormatError, UsageError
from ..pathnames import decoded
from ..store.catalog import NewRow
from ..store.manifest import Manifest
from . import import_checks as checks
from . import import_foreign as foreign_files
from .exchange import sidecar_path
from .import_foreign import Fallback

#: Stamp of a file: (st_dev, st_ino, st_size, st_mtime_ns) of it (and of its sidecar).
Stamp = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Source:
    """One export file, its header read and checked; `batches(n)` streams its rows, checked,
    as lists of at most n NewRows; `stamp` is what `os.stat` said of its files when opened,
    `opened` the `time.monotonic()` of that."""

    path: str
    manifest: Manifest
    rows: int
    batches: Callable[[int], Iterator[list[NewRow]]]
    stamp: Stamp
    opened: float = field(default_factory=time.monotonic)
    #: Something to tell the user about this file (a manifest taken from elsewhere), or None.
    notice: str | None = None

    def check_unchanged(self) -> None:
        if stamp(self.path) != self.stamp:
            raise ImportFormatError(
                f"{self.path} changed after it was checked; nothing was imported; "
                "import it again once nothing writes to it"
            )


def stamp(path: str) -> Stamp:
    if os.path.isdir(path):  # a layout folder: every file in it
        files = sorted(os.path.join(r, f) for r, _, names in os.walk(path) for f in names)
    else:
        files = [path, sidecar_path(path)] if path.endswith(".npy") else [path]
    try:
        stats = [os.stat(f) for f in files]
    except OSError:
        return ()
    return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


def open_source(path: str, fallback: Fallback | None = None) -> Source:
    """Read and check the header of an export (.parquet, .npy with its .rows.json, or a
    clip-retrieval layout folder). `fallback`: the manifest for a parquet file without one."""
    path = os.path.abspath(path)
    _refuse_part_of_layout(path)
    if os.path.isdir(path):
        from .import_layout import is_layout, layout_source

        if is_layout(path):
            return layout_source(path)
        raise UsageError(
            f"{path} is a folder but not a clip-retrieval layout (img_emb/, metadata/, "
            "manifest.json); give the files `retrieval export` wrote"
        )
    if not os.path.isfile(path):
        raise UsageError(f"{path} does not exist; give the files `retrieval export` wrote")
    if path.endswith(".npy"):
        from .import_npy import npy_source

        return npy_source(path)
    return _parquet_source(path, fallback)


def _refuse_part_of_layout(path: str) -> None:
    """Raise UsageError naming the layout folder when `path` is its img_emb/ or metadata/
    folder or a shard in them: a shard alone has no vectors or no metadata and manifest."""
    from .import_layout import is_layout
    from .layout import EMBEDDINGS_FOLDER, MANIFEST_NAME, METADATA_FOLDER

    folder = path if os.path.isdir(path) else os.path.dirname(path)
    root = os.path.dirname(folder)
    if os.path.basename(folder) not in (EMBEDDINGS_FOLDER, METADATA_FOLDER):
        return
    if not (is_layout(root) and os.path.isfile(os.path.join(root, MANIFEST_NAME))):
        return
    raise UsageError(
        f"{path} is part of the clip-retrieval layout {root} (its shards import together, "
        f"vectors with their metadata); import the folder: `retrieval import {root}`"
    )


def manifest_from(raw: Any, where: str) -> Manifest:
    """The manifest in `raw` (JSON text, or the parsed value), checked."""
    if raw is None or raw == b"" or raw == "":
        raise ImportFormatError(
            f"{where} carries no retrieval manifest (model, weights, dim); only files written "
            "by `retrieval export` can be imported"
        )
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):
            raise checks.refuse(where, "its manifest is not valid JSON") from None
    return checks.check_manifest(raw, where)


def reason(exc: BaseException) -> str:
    """A library's exception as one short line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def raise_first(found: tuple[int, Any] | None, where: str, first_row: int) -> None:
    if found is not None:
        i, describe = found
        raise checks.refuse(f"{where} row {first_row + i}", describe(i))


# -- parquet -------------------------------------------------------------------------------------

_TEXT, _BINARY = ("path", "format"), ("path_bytes", "content_hash")
_COLUMNS: tuple[str, ...] = ("path", "path_bytes", "embedding", "size", "mtime_ns", "width")
_COLUMNS += ("height", "format")
_COLUMNS += ("content_hash",)


def _parquet_source(path: str, fallback: Fallback | None) -> Source:
    import pyarrow.parquet as pq

    try:
        # pre_buffer would keep every row group read so far in memory (the whole file).
        parquet = pq.ParquetFile(path, pre_buffer=False)
        schema = parquet.schema_arrow
        total = parquet.metadata.num_rows
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise checks.refuse(path, f"it is not a readable parquet file ({reason(exc)})") from None
    meta = schema.metadata or {}
    raw = meta.get(b"retrieval.manifest")
    foreign = raw is None or raw == b""  # rewritten by another tool: the manifest is lost
    if foreign and fallback is None:
        raise foreign_files.no_manifest(path)
    manifest = fallback.manifest if foreign and fallback else manifest_from(raw, path)
    names = schema.names
    if "embedding" not in names or not {"path", "path_bytes"} & set(names):
        raise ImportFormatError(f"{path} lacks the columns embedding and path_bytes (or path)")
    wanted = [c for c in _COLUMNS if c in names]
    for name in wanted:
        kind = schema.field(name).type if schema.names.count(name) == 1 else None
        if foreign and kind is not None and foreign_files.conforms(name, kind):
            problem = foreign_files.type_problem(name, kind, manifest.dim)
        else:
            problem = _type_problem(name, schema, manifest.dim)
        if problem:
            raise checks.refuse(path, problem)
    for key, value in ((b"model", manifest.model.name), (b"dim", str(manifest.dim))):
        if key in meta and meta[key] != value.encode():
            raise checks.refuse(
                path,
                f"its schema metadata gives {key.decode()} {checks.shown(meta[key])} but "
                f"its manifest {value}",
            )

    def batches(size: int) -> Iterator[list[NewRow]]:
        first = 0
        reader = parquet.iter_batches(batch_size=size, columns=wanted)
        while True:
            try:
                batch = next(reader)
            except StopIteration:
                return
            except Exception as exc:  # damaged pages: ArrowInvalid, OSError, decompression
                raise checks.refuse(
                    path, f"it is damaged after row {first} ({reason(exc)})"
                ) from None
            if foreign:
                batch = foreign_files.conform(batch, manifest.dim, path, first)
            yield _parquet_rows(batch, manifest.dim, path, first)
            first += batch.num_rows

    said = foreign_files.notice(path, fallback) if foreign and fallback else None
    return Source(path, manifest, total, batches, stamp(path), notice=said)


def _type_problem(name: str, schema: Any, dim: int) -> str | None:
    import pyarrow as pa

    if schema.names.count(name) > 1:
        return f"it has {schema.names.count(name)} columns named {name}"
    kind = schema.field(name).type
    if name == "embedding":
        if not pa.types.is_fixed_size_list(kind):
            return f"its embedding column is {kind}, not the fixed-size list export writes"
        if kind.value_type != pa.float32():
            return (
                f"its embedding column holds {kind.value_type} values, but `retrieval export` "
                "writes float32 vectors"
            )
        if kind.list_size != dim:
            return f"it holds {kind.list_size}-d embeddings but its manifest says {dim}-d"
        return None
    fine = {
        "text": pa.types.is_string(kind) or pa.types.is_large_string(kind),
        "binary": pa.types.is_binary(kind) or pa.types.is_large_binary(kind),
        "integer": pa.types.is_integer(kind) and kind != pa.uint64(),
    }
    want = "text" if name in _TEXT else "binary" if name in _BINARY else "integer"
    return None if fine[want] else f"its {name} column is {kind}, not {want} as export writes"


def _parquet_rows(batch: Any, dim: int, path: str, first: int) -> list[NewRow]:
    """One record batch as NewRows, refused at its earliest row that breaks a rule."""
    n = batch.num_rows
    cols = dict(zip(batch.schema.names, batch.columns, strict=True))
    embedding = cols["embedding"]
    flat = embedding.values.slice(embedding.offset * dim, n * dim)
    xb = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, dim)
    norms, vector_checks = checks.vector_checks(xb)
    paths, path_check = paths_column(cols.get("path_bytes"), cols.get("path"))
    found = checks.first_bad(
        [
            path_check,
            (null_mask(embedding), lambda i: "embedding is missing (null)"),
            *vector_checks,
            *int_checks(cols),
            *meta_checks(cols),
        ]
    )
    raise_first(found, path, first)
    xb = checks.unit_length(xb, norms)

    def column(name: str) -> list[Any]:
        return cols[name].to_pylist() if name in cols else [None] * n

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


def null_mask(array: Any) -> np.ndarray:
    return np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def paths_column(raw: Any, text: Any) -> tuple[list[bytes], tuple[np.ndarray, Any]]:
    """(paths as bytes, a check) from path_bytes and/or path; both given must agree."""
    raws = raw.to_pylist() if raw is not None else None
    texts = text.to_pylist() if text is not None else None
    source = raws if raws is not None else texts
    assert source is not None
    problems: dict[int, str] = {}
    paths: list[bytes] = []
    for i, value in enumerate(source):
        if value is None:
            problems[i] = f"{'path_bytes' if raws is not None else 'path'} is missing (null)"
            break
        name = value if isinstance(value, bytes) else os.fsencode(value)
        why = checks.path_problem(name)
        if why is None and raws is not None and texts is not None and texts[i] != decoded(name):
            why = (
                f"path {checks.shown(str(texts[i]))} does not match path_bytes {checks.shown(name)}"
            )
        if why:
            problems[i] = why
            break
        paths.append(name)
    mask = np.zeros(len(source), dtype=bool)
    mask[list(problems)] = True
    return paths, (mask, problems.get)


def int_checks(cols: dict[str, Any]) -> list[tuple[np.ndarray, Any]]:
    out: list[tuple[np.ndarray, Any]] = []
    rules = {  # column: (nullable, lowest, why)
        "size": (False, 0, "is negative; sizes are byte counts >= 0"),
        "mtime_ns": (False, None, ""),
        "width": (True, 1, "is not a positive number of pixels"),
        "height": (True, 1, "is not a positive number of pixels"),
    }
    for name, (nullable, lowest, why) in rules.items():
        if name not in cols:
            continue
        nulls = null_mask(cols[name])
        values = cols[name].fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        if not nullable:
            out.append((nulls, lambda i, name=name: f"{name} is missing (null)"))
        if lowest is not None:
            low = ~nulls & (values < lowest)
            out.append((low, lambda i, name=name, v=values, w=why: f"{name} {v[i]} {w}"))
    return out


def meta_checks(cols: dict[str, Any]) -> list[tuple[np.ndarray, Any]]:
    out: list[tuple[np.ndarray, Any]] = []
    if "format" in cols:
        formats = cols["format"].to_pylist()
        bad = np.array(
            [f is not None and not checks.FORMAT_NAME.fullmatch(f) for f in formats], dtype=bool
        )
        out.append(
            (
                bad,
                lambda i: (
                    f"format {checks.shown(formats[i])} is not an image format name "
                    "(like JPEG or PNG)"
                ),
            )
        )
    if "content_hash" in cols:
        import pyarrow.compute as pc

        column = cols["content_hash"]
        lengths = pc.binary_length(column).fill_null(checks.HASH_BYTES)
        lengths = lengths.to_numpy(zero_copy_only=False)
        out.append(
            (
                lengths != checks.HASH_BYTES,
                lambda i: (
                    f"content_hash is {lengths[i]} bytes long; `retrieval index` writes "
                    f"{checks.HASH_BYTES}-byte BLAKE2b digests"
                ),
            )
        )
    return out
