"""Reports as JSON: one `to_dict` (what `--json` prints) for every report dataclass.

A report inherits `JsonReport`. Its `to_dict()` holds the fields in declaration order, each
made plain (bytes paths as str, tuples as lists, nested reports by their own `to_dict`),
unless the field is declared with `json_field`, whose options say otherwise:

    seconds: float = json_field(0.0, json=rounded(3))          # a converted value
    forgotten: list[bytes] = json_field(key="forgotten_roots")  # another key
    empty_roots: list[EmptyRoot] = json_field(json=SKIP)        # left out
    error: str | None = json_field(None, omit_none=True)        # left out while None
    index: str = json_field(keys=lambda r: {"index": r.index, "ok": r.ok})  # several keys

The output is part of the CLI's interface: keys and their order must not change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .pathnames import to_str

#: `json_field(json=SKIP)`: the field is not in `to_dict()`.
SKIP: Any = object()


def json_field(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    json: Callable[[Any], Any] | None = None,
    key: str | Callable[[Any], str] | None = None,
    keys: Callable[[Any], dict[str, Any]] | None = None,
    omit_none: bool = False,
) -> Any:
    """A dataclass field with JSON options: `json` converts the value (or is SKIP), `key`
    renames it (a name, or a function of the report), `keys(report)` gives several keys in
    its place, `omit_none` leaves it out while it is None."""
    metadata = {"json": json, "key": key, "keys": keys, "omit_none": omit_none}
    return dataclasses.field(  # type: ignore[call-overload]
        default=default, default_factory=default_factory, metadata=metadata
    )


def rounded(digits: int) -> Callable[[float], float]:
    """`json=rounded(3)`: the value rounded to `digits` decimals."""
    return lambda value: round(value, digits)


def plain(value: Any) -> Any:
    """`value` as JSON-ready data: reports by `to_dict`, bytes (paths) as lossless str,
    tuples and lists as lists, dicts value by value."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, bytes):
        return to_str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


class JsonReport:
    """Mixin for report dataclasses: `to_dict()` from the fields (see the module docstring)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            meta = f.metadata
            value = getattr(self, f.name)
            if meta.get("keys"):
                out.update(meta["keys"](self))
                continue
            convert = meta.get("json") or plain
            if convert is SKIP or (meta.get("omit_none") and value is None):
                continue
            key = meta.get("key") or f.name
            out[key(self) if callable(key) else key] = convert(value)
        return out
