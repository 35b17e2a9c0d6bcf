"""`dups` reports as CSV rows and as one self-contained HTML page.

CSV: one row per member (`CSV_COLUMNS`), names escaped as in the table. HTML: the groups as
a gallery (`ops.gallery`, the renderer `search --format html` uses too): one file, readable
offline, previews embedded, made by the indexer's decoder (a file it refuses gets a "no
preview" note with the reason), every name HTML-escaped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .. import defaults
from ..pathnames import display
from . import gallery
from .dups import DupsReport

CSV_COLUMNS = (
    "group", "rank", "keep", "reference", "score", "path", "pixels", "bytes", "mtime", "id"
)  # fmt: skip


def csv_rows(report: DupsReport) -> list[list[Any]]:
    """The header, then one row per member: group and rank from 1, keep/reference yes|no,
    score (cosine to the keeper), path (escaped), width x height, bytes, mtime (UTC ISO 8601)."""
    rows: list[list[Any]] = [list(CSV_COLUMNS)]
    for number, group in enumerate(report.groups, 1):
        for rank, m in enumerate(group.members, 1):
            rows.append(
                [
                    number,
                    rank,
                    _yes(m.is_keeper),
                    _yes(m.is_reference),
                    f"{m.score:.6f}",
                    display(m.path),
                    m.pixels,
                    m.size,
                    _iso(m.mtime_ns),
                    m.id,
                ]
            )
    return rows


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _iso(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc).isoformat(timespec="seconds")


def render_html(
    report: DupsReport,
    max_megapixels: float = defaults.MAX_MEGAPIXELS,
    progress: Callable[[int, int], None] | None = None,
    picture: gallery.Picture | None = None,
) -> str:
    """The report as one HTML document (str): a summary, then each group's members, keeper
    first, each with a preview (or the reason there is none: a file the indexer would refuse,
    e.g. above `max_megapixels`) and its caption. `picture(tile)` makes a preview's JPEG
    bytes (default: decoded from the file; `Index.gallery` takes them from the index's
    thumbnail cache)."""
    if picture is None:
        picture = functools.partial(gallery.file_picture, max_megapixels=max_megapixels)
    sections = gallery.dups_sections(report)
    return gallery.render_page("retrieval dups", report.summary(), sections, picture, progress)
