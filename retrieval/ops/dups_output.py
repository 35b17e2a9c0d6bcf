"""`dups` reports as CSV rows and as one self-contained HTML page.

CSV: one row per member (`CSV_COLUMNS`), names escaped as in the table. HTML: one file,
readable offline: every preview is a small JPEG embedded as base64, made by the indexer's
decoder (`sources.thumbnail`), so a file it refuses gets a "no preview" note instead, with
the reason; every name is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .. import defaults
from ..errors import BadImage
from ..pathnames import display
from ..sources.thumbnail import THUMBNAIL_SIZE, thumbnail_jpeg
from .dups import DupGroup, DupMember, DupsReport

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


_STYLE = """
body{font:14px sans-serif;margin:1em}h2{font-size:15px;margin:1.2em 0 .3em}
.g{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;width:SIDEpx;font-size:12px}
figure.keep{outline:3px solid #2a2}figure.dup{outline:1px solid #bbb}
figcaption{word-break:break-all}.none{width:SIDEpx;height:SIDEpx;background:#eee;
display:flex;align-items:center;justify-content:center;text-align:center;font-size:11px}
""".replace("SIDE", str(THUMBNAIL_SIZE))


def render_html(
    report: DupsReport,
    max_megapixels: float = defaults.MAX_MEGAPIXELS,
    progress: Callable[[int, int], None] | None = None,
    thumbnail: Callable[[bytes, float], bytes] = thumbnail_jpeg,
) -> str:
    """The report as one HTML document (str): a summary, then each group's members, keeper
    first, each with a preview (or the reason there is none: a file the indexer would refuse,
    e.g. above `max_megapixels`) and its caption. `thumbnail(path, max_megapixels)` makes
    the JPEG bytes of a preview."""
    total = report.images_in_groups
    done = 0
    parts = [
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>",
        f"<title>retrieval dups</title><style>{_STYLE}</style></head><body>",
        f"<p>{html.escape(report.summary())}</p>",
    ]
    for number, group in enumerate(report.groups, 1):
        parts.append(_group_header(number, group))
        parts.append("<div class='g'>")
        for member in group.members:
            parts.append(_figure(member, lambda p: thumbnail(p, max_megapixels)))
            done += 1
            if progress is not None:
                progress(done, total)
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _group_header(number: int, group: DupGroup) -> str:
    how = "" if group.min_exact else " (to the keeper)"
    return (
        f"<h2>group {number}: {len(group.members)} images, "
        f"min similarity {group.min_similarity:.4f}{how}</h2>"
    )


def _figure(member: DupMember, thumbnail: Callable[[bytes], bytes]) -> str:
    name = html.escape(display(member.path))
    try:
        data = base64.b64encode(thumbnail(member.path)).decode("ascii")
        preview = f"<img src='data:image/jpeg;base64,{data}' alt='{name}'>"
    except BadImage as exc:
        preview = f"<div class='none'>no preview: {html.escape(str(exc))}</div>"
    mark = ("reference, kept" if member.is_reference else "keep") if member.is_keeper else "dup"
    size = f"{member.width}x{member.height}, {member.size} bytes, {_iso(member.mtime_ns)}"
    return (
        f"<figure class='{'keep' if member.is_keeper else 'dup'}'>{preview}"
        f"<figcaption><b>{mark}</b> {member.score:.4f}<br>{name}<br>{size}</figcaption></figure>"
    )
