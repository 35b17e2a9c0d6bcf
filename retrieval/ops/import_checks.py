"""What `retrieval import` accepts: the manifest and every column checked against what
`retrieval index` and `retrieval export` write.

Each check raises ImportFormatError naming the file, the row (counted from 0, as pyarrow and
numpy index them) and the rule. Nothing here writes; `importing` runs these checks over every
row of every file before it stores any.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import numpy as np

from ..errors import ImportFormatError, IndexIncompatible
from ..pathnames import to_str
from ..store.manifest import SCHEMA_VERSION, Manifest
from ..store.vectors import INDEX_TYPES, VECTOR_DTYPES

#: The end of every refusal: nothing was written, and how to get past it.
NOTHING = "nothing was imported; export the file again with `retrieval export`, or leave it out"
#: `retrieval index` stores unit vectors; float16 storage moves a norm by at most 2^-11.
NORM_TOLERANCE = 1e-2
#: Rows further than this from unit length are re-normalised (the rest are kept bit for bit).
RENORMALISE_ABOVE = 1e-4
#: The content hash `retrieval index` computes: BLAKE2b, 16-byte digest (sources/decode.py).
HASH_BYTES = 16
#: Embedding sizes a timm backbone produces are in the tens to thousands.
MAX_DIM = 65_536
WEIGHT_SOURCES = ("pretrained", "file", "untrained")
PRECISIONS = ("fp32", "bf16", "fp16")
#: The resampling filters sources/decode.py knows (Pillow's names, as timm's configs spell them).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
_MODEL_NAME = re.compile(r"[A-Za-z0-9_.:/\-]{1,200}")
FORMAT_NAME = re.compile(r"[A-Za-z0-9_\-]{1,16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def refuse(where: str, problem: str) -> ImportFormatError:
    """The error for a file (and row) that breaks a rule: '<where>: <problem>; nothing ...'."""
    return ImportFormatError(f"{where}: {problem}; {NOTHING}")


def shown(text: str | bytes, limit: int = 120) -> str:
    """A value quoted for a message: control characters escaped, long ones cut."""
    # repr escapes what a terminal would act on; escaping first would double the backslashes
    value = to_str(text) if isinstance(text, bytes) else text
    quoted = repr(value)
    return quoted if len(quoted) <= limit else quoted[: limit - 4] + "...'"


# -- the manifest ------------------------------------------------------------------------------


def check_manifest(data: Any, where: str) -> Manifest:
    """The manifest an export carries (a JSON object), refused unless `index` could have
    written it. A weights path is metadata only: it is checked, never opened."""
    if not isinstance(data, dict):
        raise refuse(where, f"the manifest is a JSON {json_type(data)}, not an object")
    problem = _manifest_problem(data)
    if problem:
        raise refuse(where, f"the manifest {problem}")
    try:
        return Manifest.from_dict(data)
    except (ValueError, KeyError, TypeError, IndexIncompatible) as exc:  # pragma: no cover
        raise refuse(where, f"the manifest cannot be read ({exc})") from None


def _manifest_problem(data: dict[str, Any]) -> str | None:
    if data.get("schema_version") != SCHEMA_VERSION:
        return (
            f"has schema version {data.get('schema_version')!r}; this retrieval reads "
            f"version {SCHEMA_VERSION}"
        )
    model = data.get("model")
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        return f"names no usable model ({shown(str(model))})"
    if not _is_int(data.get("dim"), 1, MAX_DIM):
        return f"gives dim {data.get('dim')!r}; it must be a whole number from 1 to {MAX_DIM}"
    problem = _weights_problem(data.get("weights")) or _preprocess_problem(data.get("preprocess"))
    if problem:
        return problem
    choices = {
        "precision": PRECISIONS,
        "metric": ("inner_product",),
        "vector_dtype": VECTOR_DTYPES,
        "index_type": INDEX_TYPES,
    }
    for key, allowed in choices.items():
        if key in data and data[key] not in allowed:
            return f"gives {key} {data[key]!r}; it must be one of {', '.join(allowed)}"
    for key in ("index_params", "index_policy", "reduction", "created_with"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"gives {key} as a JSON {json_type(data[key])}, not an object"
    if data.get("rerank") is not None and not _is_int(data["rerank"], 0, 1_000_000):
        return f"gives rerank {data['rerank']!r}; it must be a whole number >= 0"
    return None


def _weights_problem(weights: Any) -> str | None:
    if not isinstance(weights, dict):
        return "has no weights object"
    source, path, identity = weights.get("source"), weights.get("path"), weights.get("identity")
    checksum = weights.get("sha256")
    if checksum is not None and not (isinstance(checksum, str) and _SHA256.fullmatch(checksum)):
        return "gives a weights checksum that is not a SHA-256 (64 hex digits)"
    if source not in WEIGHT_SOURCES:
        return (
            f"gives the weights source {shown(str(source))}; it must be one of "
            f"{', '.join(WEIGHT_SOURCES)}"
        )
    if source == "file":
        if not isinstance(path, str) or path_problem(os.fsencode(path)):
            return (
                f"names the weights file {shown(str(path))}, which is not an absolute, "
                "normalised path"
            )
        if not isinstance(identity, str) or not _SHA256.fullmatch(identity):
            return "gives a weights file checksum that is not a SHA-256 (64 hex digits)"
        return None
    if path is not None:
        return f"names a weights file for {source} weights"
    if source == "untrained" and not (isinstance(identity, str) and identity.isdigit()):
        return f"gives the untrained seed {identity!r}; it must be a whole number"
    if source == "pretrained" and identity is not None and not _printable(identity, 500):
        return "gives a pretrained weights identity that is not a short printable text"
    return None


def _preprocess_problem(preprocess: Any) -> str | None:
    if not isinstance(preprocess, dict):
        return "has no preprocess object"
    for key in ("height", "width", "resize"):
        if not _is_int(preprocess.get(key), 1, 8192):
            return f"gives preprocess {key} {preprocess.get(key)!r}; it must be 1 to 8192 pixels"
    if preprocess.get("interpolation") not in INTERPOLATIONS:
        return (
            f"gives the interpolation {preprocess.get('interpolation')!r}; it must be one of "
            f"{', '.join(INTERPOLATIONS)}"
        )
    for key in ("mean", "std"):
        values = preprocess.get(key)
        fine = isinstance(values, list) and len(values) == 3 and all(_is_real(v) for v in values)
        if not fine or (key == "std" and min(values) <= 0):
            return f"gives preprocess {key} {values!r}; it must be 3 finite numbers"
    return None


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _printable(text: Any, limit: int) -> bool:
    return isinstance(text, str) and 0 < len(text) <= limit and text.isprintable()


def json_type(value: Any) -> str:
    names = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


# -- rows ----------------------------------------------------------------------------------------


def path_problem(path: bytes) -> str | None:
    """Why `path` is not a name `retrieval index` stores (absolute, normalised), or None."""
    if not path:
        return "path is empty"
    if b"\0" in path:
        return f"path {shown(path)} contains a NUL byte, which no file name can hold"
    if not path.startswith(b"/"):
        return f"path {shown(path)} is relative; paths must be absolute"
    normal = os.path.normpath(path)
    if normal != path:
        return f"path {shown(path)} is not normalised (it would be {shown(normal)})"
    return None


def vector_checks(xb: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, Any]]]:
    """(norms float32 (n,), checks) for (n, dim) float32 rows: `retrieval index` writes finite,
    non-zero vectors of unit length (within NORM_TOLERANCE). Checks as for `first_bad`."""
    norms = np.sqrt(np.einsum("ij,ij->i", xb, xb))
    finite = np.isfinite(xb).all(axis=1)

    def length(i: int) -> str:
        if norms[i] == 0:
            return "embedding is all zeros"
        return (
            f"embedding has length {norms[i]:.4g}, not 1 (`retrieval index` writes "
            "L2-normalised vectors)"
        )

    off = ~(np.abs(norms - 1) <= NORM_TOLERANCE)  # NaN norms count as off
    return norms, [
        (~finite, lambda i: "embedding holds NaN or infinite values"),
        (finite & off, length),
    ]


def unit_length(xb: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """`xb` (checked) with rows further than RENORMALISE_ABOVE from unit length re-normalised;
    the others are kept bit for bit."""
    off = np.abs(norms - 1) > RENORMALISE_ABOVE
    if off.any():
        xb = xb.copy()
        xb[off] /= norms[off, None]
    return xb


def first_bad(checks: list[tuple[np.ndarray, Any]]) -> tuple[int, Any] | None:
    """The earliest row any check refuses: (row, that check's describer), else None.

    `checks` are (bad-row mask, describe(row) -> problem) pairs, in order of precedence."""
    found: tuple[int, Any] | None = None
    for mask, describe in checks:
        if mask.any():
            i = int(np.argmax(mask))
            if found is None or i < found[0]:
                found = (i, describe)
    return found
