"""The catalogue's schema (SQLAlchemy Core tables), the rows that travel, and SQL helpers.

Tables:
  images    one row per file: path (raw bytes), size, mtime_ns, content_hash, width, height,
            format, status ('ok' | 'failed'), error, vector (BLOB), gen, indexed_at
  removals  ids deleted from `images`, with the generation that deleted them
  meta      key/value: 'generation', 'manifest' (JSON), 'catalog_id' (uuid4 hex)
  roots     the paths given to `retrieval index` (raw bytes), so `retrieval index` with no
            path can re-scan them (schema 2; a schema-1 catalogue gets the table, empty, the
            first time it is opened for writing: roots are not guessed from its rows)

The catalogue modules are the only ones importing SQLAlchemy: `catalog` (opening,
transactions, meta, writes), `catalog_schema` (this), `catalog_engine` (the SQLite
connection), `catalog_queries` (row lookups) and `catalog_vectors` (the vector column).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

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


#: The `images` columns `Catalog.store` writes besides the path, in its parameter order.
ROW_COLUMNS = (
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


def has_table(conn: Connection, name: str) -> bool:
    found = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).scalar()
    return found is not None


def our_objects() -> set[tuple[str, str]]:
    """(type, name) of the tables and indexes `metadata` creates."""
    ours = set()
    for table in metadata.sorted_tables:
        ours.add(("table", table.name))
        ours.update(("index", str(index.name)) for index in table.indexes)
    return ours


def get_int(conn: Connection, key: str, default: int) -> int:
    raw = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
    return int(raw) if raw is not None else default


def set_value(conn: Connection, key: str, value: str) -> None:
    updated = conn.execute(update(meta).where(meta.c.key == key).values(value=value)).rowcount
    if not updated:
        conn.execute(insert(meta).values(key=key, value=value))


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
