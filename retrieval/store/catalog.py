"""The catalogue: one SQLite database (through SQLAlchemy 2.x) that is the source of truth.

Its tables (images, removals, meta, roots) are described in `catalog_schema`.

Every write transaction bumps `generation` and stamps the rows it touches with it, so a
vector-index file built at generation G can be brought up to date from the rows with
gen > G and the removals with gen > G. Ids come from AUTOINCREMENT and are never reused:
they are the FAISS ids.

`Catalog` (this module: opening, transactions, meta, writes) takes its reads from
`catalog_queries.RowQueries` and `catalog_vectors.VectorColumns`; the schema is in
`catalog_schema`, the SQLite connection in `catalog_engine`. These catalogue modules are
the only ones importing SQLAlchemy.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError

from ..errors import CatalogCorrupt, CatalogTampered, IndexNotFound, StorageError
from .catalog_engine import catalog_uri, refuse_links  # noqa: F401 (catalog_uri re-exported)
from .catalog_engine import make_engine as _make_engine  # a name tests patch, see test_faults
from .catalog_queries import RowQueries
from .catalog_schema import (  # noqa: F401 (CATALOG_ID_KEY... re-exported)
    CATALOG_ID_KEY,
    ROW_COLUMNS,
    SCHEMA_VERSION,
    Delta,
    NewRow,
    RowState,
    chunks,
    get_int,
    images,
    meta,
    metadata,
    our_objects,
    removals,
    roots,
    set_value,
)
from .catalog_vectors import VectorColumns
from .files import fault_point


class Catalog(RowQueries, VectorColumns):
    """The SQLite catalogue of one index. `writer=True` opens writes with BEGIN IMMEDIATE.

    Opening refuses a catalogue holding triggers or views retrieval did not create
    (CatalogTampered) unless `refuse_foreign=False` (check, which reports and drops them)."""

    def __init__(
        self,
        path: str,
        *,
        writer: bool,
        vector_dtype: str = "float32",
        refuse_foreign: bool = True,
    ) -> None:
        self.path = path
        self.writer = writer
        refuse_links(path)
        self.vector_dtype = np.dtype(vector_dtype)
        #: Values per vector (the manifest's dim), once known: `encode` refuses other sizes.
        self.dim: int | None = None
        self.engine = _make_engine(path, writer)
        with self._guard("open"):
            if refuse_foreign:
                self._refuse_foreign()
            if writer:
                metadata.create_all(self.engine)
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()

    def _refuse_foreign(self) -> None:
        """Raise CatalogTampered for a trigger or view retrieval did not create: a trigger runs
        inside our own writes (it could rewrite paths or delete rows), a view shadows nothing
        of ours but has no business here either. `check --repair` drops them."""
        for kind, name in self.foreign_objects():
            if kind in ("trigger", "view"):
                self.close()
                raise CatalogTampered(self.path, kind, name)

    def foreign_objects(self) -> list[tuple[str, str]]:
        """(type, name) of every schema object retrieval did not create, sorted: triggers,
        views, tables, indexes (SQLite's own sqlite_* objects are not foreign)."""
        with self.read() as conn:
            found = conn.exec_driver_sql("SELECT type, name FROM sqlite_master").all()
        ours = our_objects()
        return sorted(
            (kind, name)
            for kind, name in found
            if (kind, name) not in ours and not name.startswith("sqlite_")
        )

    def drop_foreign(self) -> list[tuple[str, str]]:
        """Drop every foreign schema object (see `foreign_objects`); returns what was dropped."""
        foreign = self.foreign_objects()
        order = {"trigger": 0, "view": 1, "index": 2, "table": 3}
        with self._guard("write"), self.engine.connect() as conn, conn.begin():
            for kind, name in sorted(foreign, key=lambda o: order.get(o[0], 4)):
                quoted = '"' + name.replace('"', '""') + '"'
                conn.exec_driver_sql(f"DROP {kind.upper()} IF EXISTS {quoted}")
        return foreign

    def close(self) -> None:
        self.engine.dispose()

    # -- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot while writers go on."""
        with self._guard("read"), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[tuple[Connection, int]]:
        """A write transaction that bumps the generation; yields (connection, new gen)."""
        with self._guard("write"), self.engine.connect() as conn, conn.begin():
            gen = get_int(conn, "generation", 0) + 1
            set_value(conn, "generation", str(gen))
            yield conn, gen
            fault_point("txn-open")

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            text = str(exc.orig)
            if "full" in text or "I/O" in text or "readonly" in text or "unable to open" in text:
                raise StorageError(
                    f"could not {action} the catalogue {self.path}: {text}; "
                    "the index is unchanged since its last finished batch"
                ) from None
            if "locked" in text or "busy" in text:
                raise StorageError(
                    f"the catalogue {self.path} stayed locked by another process; try again"
                ) from None
            if "no such table" in text:
                # The first run was stopped before it created the tables: an empty index.
                raise IndexNotFound(os.path.dirname(self.path)) from None
            raise CatalogCorrupt(self.path, text) from None
        except IntegrityError as exc:
            # A row the schema refuses (a NULL path, say): bad input, not a damaged file.
            raise StorageError(
                f"could not {action} the catalogue {self.path}: a row was refused "
                f"({exc.orig}); nothing from this batch was stored"
            ) from None
        except DatabaseError as exc:
            raise CatalogCorrupt(self.path, str(exc.orig)) from None

    # -- meta -----------------------------------------------------------------------------

    def generation(self, conn: Connection | None = None) -> int:
        if conn is not None:
            return get_int(conn, "generation", 0)
        with self.read() as c:
            return get_int(c, "generation", 0)

    def manifest(self) -> dict[str, Any] | None:
        with self.read() as conn:
            raw = conn.execute(select(meta.c.value).where(meta.c.key == "manifest")).scalar()
        return json.loads(raw) if raw else None

    def set_manifest(self, manifest: dict[str, Any], blobs: dict[str, bytes] | None = None) -> None:
        """Store the manifest, and with it (same transaction) any `blobs` it refers to."""
        with self.write() as (conn, _):
            for key, data in (blobs or {}).items():
                set_value(conn, key, base64.b64encode(data).decode("ascii"))
            set_value(conn, "manifest", json.dumps(manifest, sort_keys=True))

    def get_blob(self, key: str) -> bytes | None:
        """A blob stored with `set_manifest`, or None; raises ValueError if it is not base64."""
        text = self.get_meta(key)
        return None if text is None else base64.b64decode(text.encode("ascii"), validate=True)

    def get_meta(self, key: str) -> str | None:
        with self.read() as conn:
            return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()

    def set_meta(self, key: str, value: str) -> None:
        """Set a bookkeeping value without bumping the generation."""
        with self._guard("write"), self.engine.connect() as conn, conn.begin():
            set_value(conn, key, value)

    def catalog_id(self) -> str:
        """This catalogue's random hex id ("" for one made before ids existed and not yet
        opened for writing); caches written from it carry it (see vectors.write)."""
        return self.get_meta(CATALOG_ID_KEY) or ""

    def ensure_catalog_id(self) -> str:
        """The catalogue's id, given one first if it has none (writers only)."""
        with self._guard("write"), self.engine.connect() as conn, conn.begin():
            found = conn.execute(select(meta.c.value).where(meta.c.key == CATALOG_ID_KEY)).scalar()
            if found:
                return str(found)
            made = uuid.uuid4().hex
            set_value(conn, CATALOG_ID_KEY, made)
            return made

    def store(self, rows: Sequence[NewRow], existing: dict[bytes, int] | None = None) -> int:
        """Insert or update `rows` (vectors, or failures) in one transaction; a row whose path
        is stored replaces it, keeping its id. `existing` (path -> id) names rows known to be
        stored, sparing their lookup. Returns the new generation."""
        return self._upsert(rows, existing or {})[0]

    def store_many(self, rows: Sequence[NewRow]) -> tuple[int, int]:
        """`store` for bulk import: when `rows` name a path twice the last row wins, and the
        result is (inserted, updated) instead of the generation."""
        rows = list({r.path: r for r in rows}.values())
        _, inserted, updated = self._upsert(rows, {})
        return inserted, updated

    def _upsert(self, rows: Sequence[NewRow], known: dict[bytes, int]) -> tuple[int, int, int]:
        """Store `rows` (see `store`); returns (generation, inserted, updated).

        Plain DB-API executemany: a statement per row cost ~1 ms in SQLite, and SQLAlchemy's
        per-row parameter processing would cost more than SQLite itself at a million rows."""
        now = time.time()
        with self.write() as (conn, gen):
            stored = set(known)
            for chunk in chunks([r.path for r in rows if r.path not in stored], 500):
                marks = ", ".join("?" * len(chunk))
                found = conn.exec_driver_sql(
                    f"SELECT path FROM images WHERE path IN ({marks})", tuple(chunk)
                )
                stored.update(row[0] for row in found)
            new = [(r.path, *self._values(r, gen, now)) for r in rows if r.path not in stored]
            old = [(*self._values(r, gen, now), r.path) for r in rows if r.path in stored]
            names = ", ".join(ROW_COLUMNS)
            if new:
                marks = ", ".join("?" * (len(ROW_COLUMNS) + 1))
                conn.exec_driver_sql(f"INSERT INTO images (path, {names}) VALUES ({marks})", new)
            if old:
                sets = ", ".join(f"{name} = ?" for name in ROW_COLUMNS)
                conn.exec_driver_sql(f"UPDATE images SET {sets} WHERE path = ?", old)
        return gen, len(new), len(old)

    def _values(self, row: NewRow, gen: int, now: float) -> tuple[Any, ...]:
        """`row`'s values for ROW_COLUMNS, its vector encoded (raises IndexIncompatible)."""
        ok = row.vector is not None
        return (
            row.size,
            row.mtime_ns,
            row.content_hash,
            row.width,
            row.height,
            row.format,
            "ok" if ok else "failed",
            None if ok else row.error,
            self.encode(row.vector) if ok else None,
            gen,
            now,
        )

    def repoint(self, moves: Sequence[tuple[int, bytes, int, int]]) -> int:
        """Give rows new paths (renamed files): (id, path, size, mtime_ns). Keeps vectors."""
        with self.write() as (conn, gen):
            for row_id, path, size, mtime_ns in moves:
                conn.execute(
                    update(images)
                    .where(images.c.id == row_id)
                    .values(path=path, size=size, mtime_ns=mtime_ns)
                )
        return gen

    def remove(self, ids: Sequence[int]) -> int:
        """Delete rows, logging their ids in `removals` so readers can drop them."""
        with self.write() as (conn, gen):
            for chunk in chunks(list(ids), 500):
                conn.execute(delete(images).where(images.c.id.in_(chunk)))
                conn.execute(insert(removals), [{"id": i, "gen": gen} for i in chunk])
        return gen

    # -- roots, stat-only updates, files gone from disk ------------------------------------
    # None of these bump the generation: they change no vector and no path, which is all
    # the vector cache reflects.

    def remember_roots(self, paths: Sequence[bytes]) -> None:
        """Record paths given to `index` (absolute, raw bytes); known ones are kept as are."""
        with self._plain_write() as conn:
            known = set(conn.execute(select(roots.c.path)).scalars())
            now = time.time()
            new = [{"path": p, "added_at": now} for p in dict.fromkeys(paths) if p not in known]
            if new:
                conn.execute(insert(roots), new)

    def forget_roots(self, paths: Sequence[bytes]) -> None:
        with self._plain_write() as conn:
            for chunk in chunks(list(paths), 500):
                conn.execute(delete(roots).where(roots.c.path.in_(chunk)))

    def restat(self, updates: Sequence[tuple[int, int, int]]) -> None:
        """Record new (id, size, mtime_ns) of files whose bytes did not change (touched)."""
        with self._plain_write() as conn:
            conn.execute(
                update(images).where(images.c.id == bindparam("row_id")),
                [{"row_id": i, "size": size, "mtime_ns": mtime} for i, size, mtime in updates],
            )

    @contextlib.contextmanager
    def _plain_write(self) -> Iterator[Connection]:
        """A write transaction that leaves the generation alone."""
        with self._guard("write"), self.engine.connect() as conn, conn.begin():
            yield conn

    def integrity_check(self) -> list[str]:
        """SQLite's own `PRAGMA integrity_check`: [] when the file is sound."""
        with self.read() as conn:
            result = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check")]
        return [] if result == ["ok"] else result
