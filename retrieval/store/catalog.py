"""The catalogue: one SQLite database (through SQLAlchemy 2.x) that is the source of truth.

Tables:
  images    one row per file: path (raw bytes), size, mtime_ns, content_hash, width, height,
            format, status ('ok' | 'failed'), error, vector (BLOB), gen, indexed_at
  removals  ids deleted from `images`, with the generation that deleted them
  meta      key/value: 'generation', 'manifest' (JSON), 'catalog_id' (uuid4 hex)
  roots     the paths given to `retrieval index` (raw bytes), so `retrieval index` with no
            path can re-scan them (schema 2; a schema-1 catalogue gets the table, empty, the
            first time it is opened for writing: roots are not guessed from its rows)

Every write transaction bumps `generation` and stamps the rows it touches with it, so a
vector-index file built at generation G can be brought up to date from the rows with
gen > G and the removals with gen > G. Ids come from AUTOINCREMENT and are never reused:
they are the FAISS ids.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
from sqlalchemy.pool import NullPool

from .. import defaults
from ..errors import (
    CatalogCorrupt,
    CatalogTampered,
    IndexIncompatible,
    IndexNotFound,
    StorageError,
    UnsafeIndexFile,
)
from ..pathnames import prefix_bounds
from .files import fault_point, file_kind, read_only_media

SCHEMA_VERSION = 2
#: The meta key of the catalogue's random id (uuid4 hex), set when it is first written.
CATALOG_ID_KEY = "catalog_id"

metadata = MetaData()

images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", LargeBinary, nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("content_hash", LargeBinary, index=True),
    Column("width", Integer),
    Column("height", Integer),
    Column("format", String(16)),
    Column("status", String(8), nullable=False),
    Column("error", Text),
    Column("vector", LargeBinary),
    Column("gen", BigInteger, nullable=False, index=True),
    Column("indexed_at", Float, nullable=False),
    sqlite_autoincrement=True,
)

removals = Table(
    "removals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("gen", BigInteger, nullable=False, index=True),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

roots = Table(
    "roots",
    metadata,
    Column("path", LargeBinary, primary_key=True),
    Column("added_at", Float, nullable=False),
)


@dataclass(frozen=True)
class RowState:
    """What incremental indexing needs to know about a stored file."""

    id: int
    path: bytes
    size: int
    mtime_ns: int
    status: str
    content_hash: bytes | None


@dataclass(frozen=True)
class NewRow:
    """A file's outcome to store: a vector (status 'ok') or an error (status 'failed')."""

    path: bytes
    size: int
    mtime_ns: int
    content_hash: bytes | None
    width: int | None
    height: int | None
    format: str | None
    vector: np.ndarray | None
    error: str | None


@dataclass(frozen=True)
class Delta:
    """How the catalogue moved on since generation `since`.

    `stale` (int64) are ids whose vector in an index built at `since` is gone or outdated;
    `ids` (int64, n) / `vectors` (float32, n x d) are the current vectors of changed rows.
    """

    since: int
    generation: int
    stale: np.ndarray
    ids: np.ndarray
    vectors: np.ndarray


class Catalog:
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
        _refuse_links(path)
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
        ours = _our_objects()
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
            gen = _get_int(conn, "generation", 0) + 1
            _set(conn, "generation", str(gen))
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
            return _get_int(conn, "generation", 0)
        with self.read() as c:
            return _get_int(c, "generation", 0)

    def manifest(self) -> dict[str, Any] | None:
        with self.read() as conn:
            raw = conn.execute(select(meta.c.value).where(meta.c.key == "manifest")).scalar()
        return json.loads(raw) if raw else None

    def set_manifest(self, manifest: dict[str, Any], blobs: dict[str, bytes] | None = None) -> None:
        """Store the manifest, and with it (same transaction) any `blobs` it refers to."""
        with self.write() as (conn, _):
            for key, data in (blobs or {}).items():
                _set(conn, key, base64.b64encode(data).decode("ascii"))
            _set(conn, "manifest", json.dumps(manifest, sort_keys=True))

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
            _set(conn, key, value)

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
            _set(conn, CATALOG_ID_KEY, made)
            return made

    # -- incremental indexing -------------------------------------------------------------

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
            for chunk in _chunks(list(files), 500):
                for row in conn.execute(select(*cols).where(images.c.path.in_(chunk))):
                    found[row.id] = RowState(*row)
        return sorted(found.values(), key=lambda r: r.path)

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
            for chunk in _chunks([r.path for r in rows if r.path not in stored], 500):
                marks = ", ".join("?" * len(chunk))
                found = conn.exec_driver_sql(
                    f"SELECT path FROM images WHERE path IN ({marks})", tuple(chunk)
                )
                stored.update(row[0] for row in found)
            new = [(r.path, *self._values(r, gen, now)) for r in rows if r.path not in stored]
            old = [(*self._values(r, gen, now), r.path) for r in rows if r.path in stored]
            names = ", ".join(_ROW_COLUMNS)
            if new:
                marks = ", ".join("?" * (len(_ROW_COLUMNS) + 1))
                conn.exec_driver_sql(f"INSERT INTO images (path, {names}) VALUES ({marks})", new)
            if old:
                sets = ", ".join(f"{name} = ?" for name in _ROW_COLUMNS)
                conn.exec_driver_sql(f"UPDATE images SET {sets} WHERE path = ?", old)
        return gen, len(new), len(old)

    def _values(self, row: NewRow, gen: int, now: float) -> tuple[Any, ...]:
        """`row`'s values for _ROW_COLUMNS, its vector encoded (raises IndexIncompatible)."""
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
            for chunk in _chunks(list(ids), 500):
                conn.execute(delete(images).where(images.c.id.in_(chunk)))
                conn.execute(insert(removals), [{"id": i, "gen": gen} for i in chunk])
        return gen

    def find_by_hash(self, digests: Iterable[bytes]) -> dict[bytes, list[RowState]]:
        """Stored 'ok' rows with these content hashes."""
        cols = [images.c[n] for n in ("id", "path", "size", "mtime_ns", "status", "content_hash")]
        out: dict[bytes, list[RowState]] = {}
        with self.read() as conn:
            for chunk in _chunks(list(digests), 500):
                cond = and_(images.c.content_hash.in_(chunk), images.c.status == "ok")
                for row in conn.execute(select(*cols).where(cond)):
                    out.setdefault(row.content_hash, []).append(RowState(*row))
        return out

    # -- vectors -------------------------------------------------------------------------

    def encode(self, vector: np.ndarray) -> bytes:
        """A vector as stored; raises IndexIncompatible (inside the caller's transaction, so
        nothing of it is stored) when its size is not the manifest's `dim`."""
        vector = np.asarray(vector, dtype=self.vector_dtype)
        if self.dim is not None and vector.size != self.dim:
            raise IndexIncompatible(
                f"a {vector.size}-d vector cannot be stored in {self.path}, whose manifest says "
                f"{self.dim}-d; nothing from this batch was stored"
            )
        return vector.tobytes()

    def decode(self, blobs: Sequence[bytes], dim: int) -> np.ndarray:
        """BLOBs -> (n, dim) float32; raises CatalogCorrupt when they do not hold n x dim."""
        if not blobs:
            return np.zeros((0, dim), dtype=np.float32)
        flat = np.frombuffer(b"".join(blobs), dtype=self.vector_dtype)
        if flat.size != len(blobs) * dim:
            reason = f"its stored vectors are not {dim}-d as its manifest says"
            raise CatalogCorrupt(self.path, reason)
        return flat.reshape(len(blobs), dim).astype(np.float32)

    def vector_sizes(self) -> dict[int, int]:
        """{values per stored vector: how many 'ok' rows have that many} (a full scan)."""
        itemsize = self.vector_dtype.itemsize
        with self.read() as conn:
            found = conn.exec_driver_sql(
                "SELECT length(vector), count(*) FROM images WHERE status = 'ok' GROUP BY 1"
            ).all()
        return {int(size or 0) // itemsize: int(n) for size, n in found}

    def first_vector_size(self) -> int | None:
        """Values in the first stored vector (by id), or None when none is stored: a cheap
        check, on every open, that the manifest describes the vectors."""
        with self.read() as conn:
            size = conn.exec_driver_sql(
                "SELECT length(vector) FROM images WHERE status = 'ok' ORDER BY id LIMIT 1"
            ).scalar()
        return None if size is None else int(size) // self.vector_dtype.itemsize

    def iter_vectors(
        self, conn: Connection, dim: int, batch: int = 65536, since: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64 (n,), vectors float32 (n, dim)) for 'ok' rows, in id order."""
        cond = images.c.status == "ok"
        if since is not None:
            cond = and_(cond, images.c.gen > since)
        last = -1
        while True:
            rows = conn.execute(
                select(images.c.id, images.c.vector)
                .where(and_(cond, images.c.id > last))
                .order_by(images.c.id)
                .limit(batch)
            ).all()
            if not rows:
                return
            last = rows[-1][0]
            yield (
                np.array([r[0] for r in rows], dtype=np.int64),
                self.decode([r[1] for r in rows], dim),
            )

    def all_vectors(self, conn: Connection, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Every stored vector: (ids int64 (n,), vectors float32 (n, dim))."""
        parts = list(self.iter_vectors(conn, dim))
        if not parts:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def delta(self, conn: Connection, since: int, dim: int) -> Delta:
        """What changed after generation `since` (see `Delta`), inside `conn`'s snapshot."""
        generation = self.generation(conn)
        changed = conn.execute(select(images.c.id).where(images.c.gen > since)).scalars().all()
        removed = conn.execute(select(removals.c.id).where(removals.c.gen > since)).scalars()
        stale = np.array(sorted(set(changed) | set(removed)), dtype=np.int64)
        # By id through the `gen` index: `iter_vectors(since=...)` walks the table in id order
        # and reads every row (seconds per search at a million rows).
        found = self.vectors_for(conn, changed, dim)
        ids = np.array(sorted(found), dtype=np.int64)
        if len(ids):
            vectors = np.stack([found[int(i)] for i in ids]).astype(np.float32, copy=False)
        else:
            vectors = np.zeros((0, dim), np.float32)
        return Delta(since, generation, stale, ids, vectors)

    def vectors_for(self, conn: Connection, ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        """{id: float32 (dim,) vector} of the 'ok' rows among `ids` (others are left out)."""
        found, matrix = self.vectors_matrix(conn, ids, dim)
        return dict(zip(found.tolist(), matrix, strict=True))

    def vectors_matrix(
        self, conn: Connection, ids: Sequence[int], dim: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(found ids int64 (m,), vectors float32 (m, dim)) of the 'ok' rows among `ids`.

        One query per 500 ids and one decode for all of them (re-ranking reads thousands of
        rows per search; a decode per row cost more than the reads).
        """
        found: list[int] = []
        blobs: list[bytes] = []
        for chunk in _chunks(sorted(set(int(i) for i in ids)), 500):
            # Plain DB-API SQL: the ORM-free Core path still cost ~50 us a row here, 15x the
            # query itself. Same connection, so the same snapshot.
            marks = ",".join("?" * len(chunk))
            for row_id, blob in conn.exec_driver_sql(
                f"SELECT id, vector FROM images WHERE id IN ({marks}) AND status = 'ok'",
                tuple(chunk),
            ):
                found.append(row_id)
                blobs.append(blob)
        order = np.argsort(found, kind="stable")
        vectors = self.decode(blobs, dim)
        return np.array(found, dtype=np.int64)[order], vectors[order]

    # -- lookups for search, export and info -----------------------------------------------

    def paths(self, conn: Connection, ids: Iterable[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for chunk in _chunks(sorted(set(ids)), 500):
            stmt = select(images.c.id, images.c.path).where(images.c.id.in_(chunk))
            out.update({row.id: row.path for row in conn.execute(stmt)})
        return out

    def ids_for_paths(self, conn: Connection, paths: Sequence[bytes]) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for chunk in _chunks(list(paths), 500):
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

    # -- large collections: change counts, filters, bulk import ---------------------------

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

    def remembered_roots(self) -> list[bytes]:
        """The recorded roots, sorted; [] for a catalogue made before roots were recorded."""
        with self.read() as conn:
            if not _has_table(conn, "roots"):
                return []
            return sorted(conn.execute(select(roots.c.path)).scalars())

    def forget_roots(self, paths: Sequence[bytes]) -> None:
        with self._plain_write() as conn:
            for chunk in _chunks(list(paths), 500):
                conn.execute(delete(roots).where(roots.c.path.in_(chunk)))

    def restat(self, updates: Sequence[tuple[int, int, int]]) -> None:
        """Record new (id, size, mtime_ns) of files whose bytes did not change (touched)."""
        with self._plain_write() as conn:
            conn.execute(
                update(images).where(images.c.id == bindparam("row_id")),
                [{"row_id": i, "size": size, "mtime_ns": mtime} for i, size, mtime in updates],
            )

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


#: SQLite page size of new catalogues (the largest SQLite allows; see `_make_engine`).
_PAGE_SIZE = 65536

#: The `images` columns `store` writes besides the path, in `_values`' order.
_ROW_COLUMNS = (
    "size",
    "mtime_ns",
    "content_hash",
    "width",
    "height",
    "format",
    "status",
    "error",
    "vector",
    "gen",
    "indexed_at",
)


def catalog_uri(path: str, mode: str) -> str:
    """A `file:` URI for SQLite naming exactly `path`: every byte but letters, digits and
    "/-._~" percent-quoted, so `?`, `#`, `%` in a folder name stay part of the name (with a
    plain "sqlite:///" URL SQLAlchemy read "?mode=ro" as options and opened another file).

    `mode`: "rwc" (create), "rw" (an existing catalogue), "ro" or "immutable" (read-only
    media: no locks, no -shm; only safe when no write-ahead log holds commits)."""
    quoted = urllib.parse.quote(os.fsencode(os.path.abspath(path)), safe="/")
    options = "mode=ro&immutable=1" if mode == "immutable" else f"mode={mode}"
    return f"file:{quoted}?{options}"


def _open_mode(path: str, writer: bool) -> str:
    """How to open the catalogue: see `catalog_uri`."""
    if writer:
        return "rwc"
    if not read_only_media(os.path.dirname(path) or "."):
        return "rw"
    # SQLite cannot create the -shm file here. A catalogue closed cleanly has no -wal, and
    # immutable=1 reads it with no -shm at all; a -wal with commits needs its -shm beside it
    # (mode=ro reads both), else immutable=1 would silently miss those commits.
    try:
        has_log = os.path.getsize(path + "-wal") > 0
    except OSError:
        has_log = False
    return "ro" if has_log else "immutable"


def _make_engine(path: str, writer: bool) -> Engine:
    if not writer and not os.path.exists(path):
        raise FileNotFoundError(path)
    uri = catalog_uri(path, _open_mode(path, writer))

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True)

    # A creator, not a URL: SQLAlchemy would parse the path itself (and its "?").
    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see "begin" below)
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={defaults.BUSY_TIMEOUT_MS}")
        # Functions named in the schema (triggers, views, indexes) never run with our rights.
        cursor.execute("PRAGMA trusted_schema=OFF")
        if writer:
            # Only a new database takes it (before WAL mode writes its header). A row holds
            # a vector BLOB (2 KiB at 512-d float32): with 4 KiB pages one row fits per page
            # and half the file is slack; 64 KiB pages waste a few percent.
            cursor.execute(f"PRAGMA page_size={_PAGE_SIZE}")
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock up front, so two writers never deadlock.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def _has_table(conn: Connection, name: str) -> bool:
    found = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).scalar()
    return found is not None


def _refuse_links(path: str) -> None:
    """Raise UnsafeIndexFile when the catalogue or a file SQLite keeps beside it is a symlink,
    folder, FIFO...: SQLite follows links when it opens (and truncates) its -wal and -journal,
    so a planted link would let it write some other file; a FIFO would hang every reader."""
    for name in (path, path + "-wal", path + "-shm", path + "-journal"):
        try:
            kind = file_kind(os.lstat(name).st_mode)
        except FileNotFoundError:
            continue
        if kind != "file":
            raise UnsafeIndexFile(name, kind, "a SQLite file")


def _our_objects() -> set[tuple[str, str]]:
    """(type, name) of the tables and indexes `metadata` creates."""
    ours = set()
    for table in metadata.sorted_tables:
        ours.add(("table", table.name))
        ours.update(("index", str(index.name)) for index in table.indexes)
    return ours


def _get_int(conn: Connection, key: str, default: int) -> int:
    raw = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
    return int(raw) if raw is not None else default


def _set(conn: Connection, key: str, value: str) -> None:
    updated = conn.execute(update(meta).where(meta.c.key == key).values(value=value)).rowcount
    if not updated:
        conn.execute(insert(meta).values(key=key, value=value))


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
