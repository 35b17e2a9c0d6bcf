"""Reading a `retrieval export --format npy` file for an import: the manifest and row paths
from OUT.rows.json, the (N, dim) float32 matrix read slice by slice with plain reads (no
memory map: a file truncated meanwhile would crash the process with SIGBUS instead of raising).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ImportFormatError
from ..store.catalog import NewRow
from . import import_checks as checks
from .exchange import sidecar_path
from .import_sources import Source, manifest_from, raise_first, reason, stamp


def npy_source(path: str) -> Source:
    side = sidecar_path(path)
    sidecar = _read_sidecar(path, side)
    manifest = manifest_from(sidecar.get("manifest"), side)
    for key, value in (("model", manifest.model.name), ("dim", manifest.dim)):
        if key in sidecar and sidecar[key] != value:
            raise checks.refuse(side, f"it gives {key} {sidecar[key]!r} but its manifest {value!r}")
    rows = sidecar.get("rows")
    if not isinstance(rows, list):
        raise checks.refuse(side, "it has no list of rows")
    dim = manifest.dim
    shape, offset = npy_header(path)
    if len(shape) != 2 or shape[1] != dim or shape[0] != len(rows):
        raise ImportFormatError(
            f"{path} holds a {shape} matrix but {side} describes {len(rows)} rows of "
            f"{dim}-d vectors; export them again"
        )
    expected = offset + len(rows) * dim * 4
    actual = os.path.getsize(path)
    if actual != expected:
        raise checks.refuse(
            path,
            f"it is {actual} bytes long, but its header describes {len(rows)} x {dim} float32 "
            f"values ({expected} bytes with the header): it was cut short or padded",
        )

    def batches(size: int) -> Iterator[list[NewRow]]:
        with open(path, "rb") as fh:
            for start in range(0, len(rows), size):
                part = rows[start : start + size]
                paths = _sidecarpaths_column(part, side, start)
                fh.seek(offset + start * dim * 4)
                data = fh.read(len(part) * dim * 4)
                if len(data) != len(part) * dim * 4:
                    raise checks.refuse(path, f"it ends inside row {start + len(data) // dim // 4}")
                xb = np.frombuffer(data, dtype="<f4").reshape(len(part), dim).astype(np.float32)
                norms, vector_checks = checks.vector_checks(xb)
                raise_first(checks.first_bad(vector_checks), path, start)
                xb = checks.unit_length(xb, norms)
                yield [
                    NewRow(name, 0, 0, None, None, None, None, vector, None)
                    for name, vector in zip(paths, xb, strict=True)
                ]

    return Source(path, manifest, len(rows), batches, stamp(path))


def _read_sidecar(path: str, side: str) -> dict[str, Any]:
    try:
        with open(side, encoding="utf-8") as fh:
            sidecar = json.load(fh)
    except FileNotFoundError:
        raise ImportFormatError(
            f"{path} has no sidecar {side}; import the .npy together with the .rows.json "
            "that `retrieval export --format npy` wrote beside it"
        ) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise checks.refuse(side, f"it cannot be read as JSON ({reason(exc)})") from None
    if not isinstance(sidecar, dict):
        raise checks.refuse(
            side, f"it is a JSON {checks.json_type(sidecar)}, not the object export writes"
        )
    return sidecar


def npy_header(path: str, dtypes: tuple[str, ...] = ("<f4",)) -> tuple[tuple[int, ...], int]:
    """(shape, offset of the data) of a C-order .npy file of one of `dtypes` (numpy names)."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read(fh)
            offset = fh.tell()
    except Exception as exc:  # numpy raises ValueError, EOFError, SyntaxError, ... on garbage
        raise checks.refuse(path, f"it is not a readable .npy matrix ({reason(exc)})") from None
    if dtype not in [np.dtype(d) for d in dtypes]:
        wanted = " or ".join(np.dtype(d).name for d in dtypes)
        raise checks.refuse(
            path, f"it holds {dtype} values, but `retrieval export` writes {wanted} vectors"
        )
    if fortran:
        raise checks.refuse(path, "it is in Fortran order, but `retrieval export` writes C order")
    return tuple(shape), offset


def _sidecarpaths_column(rows: list[Any], side: str, first: int) -> list[bytes]:
    paths = []
    for i, row in enumerate(rows):
        name = row.get("path") if isinstance(row, dict) else None
        if not isinstance(name, str):
            raise checks.refuse(f"{side} row {first + i}", "it has no path (a string)")
        try:
            raw = os.fsencode(name)
        except UnicodeError:
            raise checks.refuse(f"{side} row {first + i}", "its path is not a file name") from None
        problem = checks.path_problem(raw)
        if problem:
            raise checks.refuse(f"{side} row {first + i}", problem)
        paths.append(raw)
    return paths
