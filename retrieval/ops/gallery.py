"""Static galleries: one self-contained HTML page of pictures with captions, for sharing what
`search` or `dups` found (`--format html`).

The page is readable offline: no script, every style inline, every picture a JPEG thumbnail
embedded as a `data:` URI, made by the indexer's decoder (a file it refuses shows "no
preview" with the reason instead), and every name HTML-escaped. Indexed images come from
the thumbnail cache (`ops.images`), so a second page of the same images decodes nothing.

`render_page` is the one renderer; `search_sections` and `dups_sections` say what goes on
it, `page` puts them together for an index.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from .. import defaults
from ..errors import BadImage
from ..pathnames import display, printable
from ..sources.decode import read_file
from ..sources.thumbnail import square_jpeg
from ..store.index_dir import IndexDir
from . import images
from .dups import DupGroup, DupMember, DupsReport
from .searching import QueryResult

#: Side of the pictures on the page, in CSS pixels (the JPEGs are defaults.THUMBNAIL_SIZE: sharp on
#: high-density screens).
SHOWN_SIZE = 160


@dataclass(frozen=True)
class Tile:
    """One picture and its caption: the file's name (bytes; None: no file, e.g. a query
    read from stdin) and its catalogue `id` when indexed (then its thumbnail comes from the
    cache); `lines` are plain text (the first in bold); `kind` is 'query', 'keep', 'dup' or
    '' (how the frame is drawn)."""

    path: bytes | None
    lines: tuple[str, ...]
    kind: str = ""
    id: int | None = None


@dataclass(frozen=True)
class Section:
    """A heading and its tiles; `note` is plain text under the heading (a query's error)."""

    heading: str
    tiles: tuple[Tile, ...]
    note: str = ""


#: Makes a tile's JPEG bytes; raises BadImage with the reason there is no picture.
Picture = Callable[[Tile], bytes]

_STYLE = """
body{font:14px sans-serif;margin:1em;color:#222}h2{font-size:15px;margin:1.2em 0 .3em}
.g{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;width:SIDEpx;font-size:12px}
figure img{width:SIDEpx;height:SIDEpx;display:block}
figure.keep{outline:3px solid #2a2}figure.dup{outline:1px solid #bbb}
figure.query{outline:3px solid #36c}figcaption{word-break:break-all}.note{color:#a22}
.none{width:SIDEpx;height:SIDEpx;background:#eee;display:flex;align-items:center;
justify-content:center;text-align:center;font-size:11px}
""".replace("SIDE", str(SHOWN_SIZE))


def render_page(
    title: str,
    summary: str,
    sections: Sequence[Section],
    picture: Picture,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """The page as one HTML document (str). `progress(done, total)` after each picture."""
    total = sum(len(s.tiles) for s in sections)
    done = 0
    parts = [
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>",
        f"<title>{_text(title)}</title><style>{_STYLE}</style></head><body>",
        f"<p>{_text(summary)}</p>",
    ]
    for section in sections:
        parts.append(f"<h2>{_text(section.heading)}</h2>")
        if section.note:
            parts.append(f"<p class='note'>{_text(section.note)}</p>")
        parts.append("<div class='g'>")
        for tile in section.tiles:
            parts.append(_figure(tile, picture))
            done += 1
            if progress is not None:
                progress(done, total)
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _text(text: str) -> str:
    """Plain text as HTML: controls and undecodable bytes shown as escapes, then escaped."""
    return html.escape(printable(text))


def _figure(tile: Tile, picture: Picture) -> str:
    alt = _text(tile.lines[-1] if tile.lines else "")
    try:
        data = base64.b64encode(picture(tile)).decode("ascii")
        shown = f"<img src='data:image/jpeg;base64,{data}' alt='{alt}'>"
    except BadImage as exc:
        shown = f"<div class='none'>no preview: {_text(str(exc))}</div>"
    first, *rest = [_text(line) for line in tile.lines] or [""]
    caption = "<br>".join([f"<b>{first}</b>", *rest])
    kind = f" class='{tile.kind}'" if tile.kind else ""
    return f"<figure{kind}>{shown}<figcaption>{caption}</figcaption></figure>"


def indexed_pictures(
    index_dir: IndexDir, max_megapixels: float, size: int = defaults.THUMBNAIL_SIZE
) -> Picture:
    """Pictures of tiles: ids from the index's thumbnail cache, file names decoded (neither
    above `max_megapixels`)."""

    def picture(tile: Tile) -> bytes:
        if tile.id is not None:
            return images.thumbnail(index_dir, tile.id, size, max_megapixels=max_megapixels)
        return file_picture(tile, max_megapixels, size)

    return picture


def file_picture(tile: Tile, max_megapixels: float, size: int = defaults.THUMBNAIL_SIZE) -> bytes:
    """The square thumbnail of a tile's file, made by the indexer's decoder; raises BadImage."""
    if tile.path is None:
        raise BadImage("read from a stream: no copy of it was kept")
    data, _ = read_file(tile.path)
    return square_jpeg(data, size, max_megapixels)


def page(
    index_dir: IndexDir,
    found: Sequence[QueryResult] | DupsReport,
    max_megapixels: float = defaults.MAX_MEGAPIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """The gallery of search results (`found`: a list of QueryResult) or of a DupsReport,
    pictures from the index's thumbnail cache."""
    picture = indexed_pictures(index_dir, max_megapixels)
    if isinstance(found, DupsReport):
        sections = dups_sections(found)
        return render_page("retrieval dups", found.summary(), sections, picture, progress)
    sections = search_sections(found)
    summary = search_summary(found)
    return render_page("retrieval search", summary, sections, picture, progress)


# -- search results ------------------------------------------------------------------------


def search_sections(results: Sequence[QueryResult]) -> list[Section]:
    """One section per query: the query image first (when it is a file: `-`, stdin, has
    no picture), then its results, best first, with rank, score and path."""
    sections = []
    for result in results:
        path = None if result.query == "-" else os.fsencode(result.query)
        name = display(os.fsencode(result.query))
        tiles = [Tile(path, ("query", name), "query")]
        for rank, hit in enumerate(result.results, 1):
            caption = (f"{rank}. score {hit.score:.4f}", display(hit.path))
            tiles.append(Tile(hit.path, caption, id=hit.id))
        note = result.error or ("" if result.results else "no results")
        sections.append(Section(f"query: {name}", tuple(tiles), note))
    return sections


def search_summary(results: Sequence[QueryResult]) -> str:
    """One line: how many queries and results the page shows."""
    hits = sum(len(r.results) for r in results)
    failed = sum(r.error is not None for r in results)
    errors = f", {failed} could not be used" if failed else ""
    return f"{len(results)} query image(s){errors}, {hits} result(s)"


# -- duplicate groups ----------------------------------------------------------------------


def dups_sections(report: DupsReport) -> list[Section]:
    """One section per group: its members, keeper(s) first, each captioned with keep/dup,
    score, path, size and mtime."""
    return [
        Section(_group_header(number, group), tuple(_member_tile(m) for m in group.members))
        for number, group in enumerate(report.groups, 1)
    ]


def _group_header(number: int, group: DupGroup) -> str:
    how = "" if group.min_exact else " (to the keeper)"
    return (
        f"group {number}: {len(group.members)} images, "
        f"min similarity {group.min_similarity:.4f}{how}"
    )


def _member_tile(member: DupMember) -> Tile:
    mark = ("reference, kept" if member.is_reference else "keep") if member.is_keeper else "dup"
    mtime = datetime.fromtimestamp(member.mtime_ns / 1e9, tz=timezone.utc)
    size = f"{member.width}x{member.height}, {member.size} bytes, {mtime.isoformat('T', 'seconds')}"
    lines = (f"{mark} {member.score:.4f}", display(member.path), size)
    return Tile(member.path, lines, "keep" if member.is_keeper else "dup", member.id)
