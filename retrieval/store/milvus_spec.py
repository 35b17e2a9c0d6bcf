"""Milvus without pymilvus (which only `store.milvus` imports): whether it is installed, the
`--vectors` option read into the manifest's `vectors`, search filters as Milvus boolean
expressions over the collection's scalar fields (paths as hex, so any bytes compare and a
folder stays a prefix), and the wording of a failure to open a collection.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any

from ..errors import UsageError

#: The value of an unknown integer field (rows imported from .npy have no width, say).
MISSING = -(2**62)
INSTALL = "pip install 'retrieval[milvus]' (pymilvus and milvus-lite)"


def require() -> None:
    """Raise UsageError (how to install it) when pymilvus is not installed."""
    try:
        found = importlib.util.find_spec("pymilvus") is not None
    except ValueError:  # a module set to None in sys.modules: as if not installed
        found = False
    if not found:
        raise UsageError(f"--vectors milvus needs pymilvus: {INSTALL}")


def parse(spec: str, directory: str) -> dict[str, Any]:
    """'faiss' -> {}; 'milvus:URI' -> {"kind": "milvus", "uri": URI}; a bare 'milvus' or
    'milvus:' puts a Milvus Lite file in the index directory; a relative file is made
    absolute, then one inside `directory` is recorded relative to it (see `resolve`: the
    index can be moved or copied). Raises UsageError."""
    kind, _, uri = spec.partition(":")
    if kind == "faiss" and not uri:
        return {}
    if kind != "milvus":
        raise UsageError(f"unknown --vectors {spec!r}; use faiss or milvus:URI")
    require()
    if not uri:
        uri = os.path.join(directory, "vectors.milvus.db")
    if not re.match(r"^(https?|tcp|grpc)://", uri):
        if not uri.endswith(".db"):
            raise UsageError(f"a Milvus Lite file must end in .db, not {uri!r}")
        uri = os.path.abspath(uri)
        folder = os.path.dirname(uri)
        if not os.path.isdir(folder) and not (directory and folder == os.path.abspath(directory)):
            raise UsageError(
                f"{folder} does not exist, so the Milvus Lite file {uri} cannot be made there; "
                "create the folder first, or give `--vectors milvus:` for a file in the index"
            )
        inside = os.path.relpath(uri, os.path.abspath(directory)) if directory else ".."
        if not inside.startswith(".."):
            uri = inside
    return {"kind": "milvus", "uri": uri}


def resolve(uri: str, directory: str) -> str:
    """The URI a manifest records, with a Lite file inside the index (relative) made absolute
    against the index `directory` wherever it now is."""
    if re.match(r"^(https?|tcp|grpc)://", uri) or os.path.isabs(uri):
        return uri
    return os.path.join(os.path.abspath(directory), uri)


def expression(where: dict[str, Any]) -> str:
    """`Catalog.filter_ids`'s conditions as a Milvus boolean expression (empty: none)."""
    parts = []
    under = [bytes(f) for f in where.get("under") or ()]
    if under:
        parts.append(" or ".join(f'path like "{_folder(f).hex()}%"' for f in under))
    formats = [str(f).upper() for f in where.get("formats") or ()]
    if formats:
        parts.append(f"format in {formats!r}".replace("'", '"'))
    bounds = (
        ("width", ">=", "min_width"),
        ("height", ">=", "min_height"),
        ("size", ">=", "min_size"),
        ("size", "<=", "max_size"),
        ("mtime_ns", ">=", "mtime_after_ns"),
        ("mtime_ns", "<", "mtime_before_ns"),
    )
    for column, op, key in bounds:
        if where.get(key) is not None:
            parts.append(f"{column} != {MISSING} and {column} {op} {int(where[key])}")
    return " and ".join(f"({p})" for p in parts)


def _folder(path: bytes) -> bytes:
    """A folder as a path prefix: with one trailing separator (as `prefix_bounds`)."""
    return path.rstrip(b"/") + b"/"


def known(value: Any) -> int:
    return MISSING if value is None else int(value)


def open_error(uri: str, exc: Exception, index: str | None = None) -> str:
    """One line for a failure to open `uri` (of the index folder `index`): what went wrong
    and what to do."""
    text = str(getattr(exc, "message", "") or exc or type(exc).__name__).splitlines()[0]
    cause = exc.__context__ or exc.__cause__
    folder = os.path.dirname(uri)
    if uri.endswith(".db") and not os.path.isdir(folder):
        return (
            f"cannot open the Milvus Lite file {uri}: {folder} does not exist (was it moved? "
            "the index keeps its vectors there); put the file back, or rebuild the index from "
            "its catalogue: `retrieval export` then `retrieval import --vectors ...`"
        )
    if uri.endswith(".db") and os.path.isfile(uri):
        repair = f"`retrieval check --repair --index {index}`" if index else "a repair"
        return (
            f"cannot open the Milvus Lite file {uri}: it is a file, not a Milvus Lite database "
            f"(a folder); remove it, then {repair} rebuilds the collection from the catalogue"
        )
    if "lock" in f"{cause}".lower() or "Open local milvus failed" in text:
        return (
            f"cannot open the Milvus Lite file {uri}: another process has it open (Milvus Lite "
            "allows one process at a time; serve many with a Milvus server, http://HOST:19530)"
        )
    return (
        f"cannot reach Milvus at {uri} ({text}); start the Milvus server there, or check the "
        "URI (http://HOST:19530 for a server, a .db file for Milvus Lite)"
    )
