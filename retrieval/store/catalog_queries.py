"""Row lookups in the catalogue: by path, folder, hash or id, counts, failures, filters,
and walks over every row, for indexing, search, export, prune and `info`.

`RowQueries` is one of `Catalog`'s bases; `Catalog` provides the `read` it declares.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Connection, and_, func, or_, select

from ..pathnames import prefix_bounds
from .catalog_schema import RowState, chunks, has_table, images, removals, roots


class RowQueries:
    """Reads of `images` (and `removals`, `roots`) rows; none of them writes."""

    if TYPE_CHECKING:

        def read(self) -> contextlib.AbstractContextManager[Connection]: ...

    def rows_under(self, folders: Iterable[bytes], files: Iterable[bytes]) -> list[RowState]:
        """Stored rows whose path is one of `files` or lies under one of `folders`."""
        cols = [images.c[n] for n in ("id", "path", "size", "mtime_ns", "status", "content_hash")]
        found: dict[int, RowState] = {}
        with self.read() as conn:
            for folder in folders:
                low, high = prefix_bounds(folder)
                cond = and_(images.c.path >= low, images.c.path < high)
                for row in conn.execute(select(*cols).where(cond)):
                    found[row.id] = RowState(*row)
            for chunk in chunks(list(files), 500):
                for row in conn.execute(select(*cols).where(images.c.path.in_(chunk))):
                    found[row.id] = RowState(*row)
        return sorted(found.values(), key=lambda r: r.path)

    def find_by_hash(self, digests: Iterable[bytes]) -> dict[bytes, list[RowState]]:
        """Stored 'ok' rows with these content hashes."""
        cols = [images.c[n] for n in ("id", "path", "size", "mtime_ns", "status", "content_hash")]
        out: dict[bytes, list[RowState]] = {}
        with self.read() as conn:
            for chunk in chunks(list(digests), 500):
                cond = and_(images.c.content_hash.in_(chunk), images.c.status == "ok")
                for row in conn.execute(select(*cols).where(cond)):
                    out.setdefault(row.content_hash, []).append(RowState(*row))
        return out

    def paths(self, conn: Connection, ids: Iterable[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for chunk in chunks(sorted(set(ids)), 500):
            stmt = select(images.c.id, images.c.path).where(images.c.id.in_(chunk))
            out.update({row.id: row.path for row in conn.execute(stmt)})
        return out

    def image_rows(self, conn: Connection, ids: Iterable[int]) -> dict[int, Any]:
        """{id: row with id, path, size, mtime_ns, width, height, format} of the 'ok' rows
        among `ids`."""
        names = ("id", "path", "size", "mtime_ns", "width", "height", "format")
        cols = [images.c[n] for n in names]
        out: dict[int, Any] = {}
        for chunk in chunks(sorted({int(i) for i in ids}), 500):
            cond = and_(images.c.id.in_(chunk), images.c.status == "ok")
            out.update({row.id: row for row in conn.execute(select(*cols).where(cond))})
        return out

    def image_row(self, conn: Connection, image_id: int) -> Any | None:
        """The 'ok' row with this id (id, path, size, mtime_ns, content_hash, width, height,
        format), or None."""
        cols = [
            images.c[n]
            for n in ("id", "path", "size", "mtime_ns", "content_hash", "width", "height", "format")
        ]
        cond = and_(images.c.id == image_id, images.c.status == "ok")
        return conn.execute(select(*cols).where(cond)).first()

    def image_rows_page(
        self, conn: Connection, offset: int, limit: int, under: Sequence[bytes] = ()
    ) -> list[Any]:
        """'ok' rows (as `image_row`), by id, skipping `offset`, at most `limit`, only those
        under one of the folders `under` when given."""
        names = ("id", "path", "size", "mtime_ns", "content_hash", "width", "height", "format")
        conds = [images.c.status == "ok"]
        if under:
            bounds = [prefix_bounds(folder) for folder in under]
            conds.append(or_(*[and_(images.c.path >= lo, images.c.path < hi) for lo, hi in bounds]))
        stmt = select(*[images.c[n] for n in names]).where(and_(*conds)).order_by(images.c.id)
        return list(conn.execute(stmt.offset(offset).limit(limit)))

    def failure_rows(self, conn: Connection, limit: int | None = None) -> list[Any]:
        """The 'failed' rows (id, path, error, size, mtime_ns), by path, at most `limit`."""
        cols = [images.c[n] for n in ("id", "path", "error", "size", "mtime_ns")]
        stmt = select(*cols).where(images.c.status == "failed").order_by(images.c.path)
        if limit is not None:
            stmt = stmt.limit(limit)
        return list(conn.execute(stmt))

    def ids_for_paths(self, conn: Connection, paths: Sequence[bytes]) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for chunk in chunks(list(paths), 500):
            cond = and_(images.c.path.in_(chunk), images.c.status == "ok")
            out.update(
                {
                    row.path: row.id
                    for row in conn.execute(select(images.c.id, images.c.path).where(cond))
                }
            )
        return out

    def counts(self, conn: Connection) -> dict[str, int]:
        """{'ok': n, 'failed': m}."""
        rows = conn.execute(select(images.c.status, func.count()).group_by(images.c.status))
        found = {status: n for status, n in rows}
        return {"ok": found.get("ok", 0), "failed": found.get("failed", 0)}

    def failures(self, conn: Connection, limit: int | None = None) -> list[tuple[bytes, str]]:
        stmt = (
            select(images.c.path, images.c.error)
            .where(images.c.status == "failed")
            .order_by(images.c.path)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        return [(row.path, row.error or "") for row in conn.execute(stmt)]

    def metadata_rows(self, conn: Connection, batch: int = 65536) -> Iterator[list[Any]]:
        """'ok' rows with every column, in id order, `batch` at a time."""
        last = -1
        while True:
            rows = conn.execute(
                select(images)
                .where(and_(images.c.status == "ok", images.c.id > last))
                .order_by(images.c.id)
                .limit(batch)
            ).all()
            if not rows:
                return
            last = rows[-1].id
            yield list(rows)

    def changed_count(self, conn: Connection, since: int) -> int:
        """How many rows were written and ids removed after generation `since`."""
        written = conn.execute(
            select(func.count()).select_from(images).where(images.c.gen > since)
        ).scalar()
        removed = conn.execute(
            select(func.count()).select_from(removals).where(removals.c.gen > since)
        ).scalar()
        return int(written or 0) + int(removed or 0)

    def filter_ids(
        self,
        conn: Connection,
        *,
        under: Sequence[bytes] = (),
        formats: Sequence[str] = (),
        min_width: int | None = None,
        min_height: int | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        mtime_after_ns: int | None = None,
        mtime_before_ns: int | None = None,
    ) -> np.ndarray:
        """Ids (sorted int64) of 'ok' rows meeting every condition given.

        `under`: the path lies under any of these folders; `formats`: Pillow format names,
        any case; sizes in bytes; mtimes in ns since the epoch (after: >=, before: <).
        """
        conds = [images.c.status == "ok"]
        if under:
            bounds = [prefix_bounds(folder) for folder in under]
            conds.append(or_(*[and_(images.c.path >= lo, images.c.path < hi) for lo, hi in bounds]))
        if formats:
            conds.append(func.upper(images.c.format).in_([f.upper() for f in formats]))
        for column, low in ((images.c.width, min_width), (images.c.height, min_height)):
            if low is not None:
                conds.append(column >= low)
        if min_size is not None:
            conds.append(images.c.size >= min_size)
        if max_size is not None:
            conds.append(images.c.size <= max_size)
        if mtime_after_ns is not None:
            conds.append(images.c.mtime_ns >= mtime_after_ns)
        if mtime_before_ns is not None:
            conds.append(images.c.mtime_ns < mtime_before_ns)
        found = conn.execute(select(images.c.id).where(and_(*conds)).order_by(images.c.id))
        return np.fromiter(found.scalars(), dtype=np.int64)

    def remembered_roots(self) -> list[bytes]:
        """The recorded roots, sorted; [] for a catalogue made before roots were recorded."""
        with self.read() as conn:
            if not has_table(conn, "roots"):
                return []
            return sorted(conn.execute(select(roots.c.path)).scalars())

    def iter_paths(self, batch: int = 65536) -> Iterator[list[tuple[int, bytes]]]:
        """Every row's (id, path), in id order, `batch` at a time, each batch its own read
        snapshot (so a long walk over the disk holds no transaction open)."""
        last = -1
        while True:
            with self.read() as conn:
                rows = conn.execute(
                    select(images.c.id, images.c.path)
                    .where(images.c.id > last)
                    .order_by(images.c.id)
                    .limit(batch)
                ).all()
            if not rows:
                return
            last = rows[-1][0]
            yield [(row.id, row.path) for row in rows]

    def rows_at_or_under(self, root: bytes) -> dict[int, bytes]:
        """{id: path} of the rows at `root` (a file root) or under it (a folder)."""
        low, high = prefix_bounds(root)
        cond = or_(images.c.path == root, and_(images.c.path >= low, images.c.path < high))
        with self.read() as conn:
            return dict(conn.execute(select(images.c.id, images.c.path).where(cond)).all())
