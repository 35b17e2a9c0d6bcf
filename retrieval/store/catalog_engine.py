"""Opening the catalogue's SQLite file: the `file:` URI, the open mode (read-only media
included), the SQLAlchemy engine and its pragmas, and the refusal of planted links.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import NullPool

from .. import defaults
from ..errors import UnsafeIndexFile
from .files import file_kind, read_only_media

#: SQLite page size of new catalogues (the largest SQLite allows; see `make_engine`).
_PAGE_SIZE = 65536


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


def make_engine(path: str, writer: bool) -> Engine:
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


def refuse_links(path: str) -> None:
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
