"""Search parameters as a page or the API receives them (strings) -> k and a SearchFilter.

The names are the CLI's options without dashes: under, format, min_width, min_height,
min_size / max_size (bytes, or with a unit: 200K, 5M), modified_after / modified_before
(YYYY-MM-DD, local time, as `retrieval search` reads them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from .. import RetrievalError, SearchFilter, UsageError, parse_size
from .settings import MAX_K

#: The filter fields a search form carries, in the order the page shows them.
FILTER_FIELDS = (
    "under",
    "format",
    "min_width",
    "min_height",
    "min_size",
    "max_size",
    "modified_after",
    "modified_before",
)


def clean(params: Mapping[str, Any]) -> dict[str, str]:
    """The filter fields given (non-empty), as strings, to refill the form and build links."""
    out = {}
    for name in FILTER_FIELDS:
        value = params.get(name)
        if value is not None and str(value).strip():
            out[name] = str(value).strip()
    return out


def search_filter(params: Mapping[str, Any]) -> SearchFilter:
    """The SearchFilter of the given fields; raises UsageError naming a bad field."""
    given = clean(params)
    return SearchFilter(
        under=(given["under"],) if "under" in given else (),
        formats=(given["format"],) if "format" in given else (),
        min_width=_count(given, "min_width"),
        min_height=_count(given, "min_height"),
        min_size=_size(given, "min_size"),
        max_size=_size(given, "max_size"),
        modified_after=_date(given, "modified_after"),
        modified_before=_date(given, "modified_before"),
    )


def top_k(value: Any, default: int) -> int:
    """k from a form: 1..MAX_K; raises UsageError."""
    if value is None or str(value).strip() == "":
        return default
    try:
        k = int(str(value))
    except ValueError:
        raise UsageError(f"k must be a whole number of results, not {value!r}") from None
    if not 1 <= k <= MAX_K:
        raise UsageError(f"k must be between 1 and {MAX_K}, not {k}")
    return k


def _count(given: dict[str, str], name: str) -> int | None:
    if name not in given:
        return None
    try:
        value = int(given[name])
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{name} must be a number of pixels, 1 or more, not {given[name]!r}")
    return value


def _size(given: dict[str, str], name: str) -> int | None:
    if name not in given:
        return None
    try:
        return parse_size(given[name])
    except RetrievalError as exc:
        raise UsageError(f"{name}: {exc}") from None


def _date(given: dict[str, str], name: str) -> float | None:
    if name not in given:
        return None
    text = given[name].replace("T", " ")
    for layout in ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return dt.datetime.strptime(text, layout).timestamp()
        except ValueError:
            continue
    raise UsageError(f"{name} must be a date such as 2024-05-31, not {given[name]!r}")
