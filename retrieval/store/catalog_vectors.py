"""The catalogue's vector column: encoding, decoding and reading stored vectors, and the
changes since a generation that bring a vector cache up to date.

`VectorColumns` is one of `Catalog`'s bases; `Catalog` provides the attributes it declares.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Connection, and_, select

from ..errors import CatalogCorrupt, IndexIncompatible
from .catalog_schema import Delta, chunks, images, removals


class VectorColumns:
    """Stored vectors: `vector_dtype` values per row, `dim` of them (once known)."""

    path: str
    vector_dtype: np.dtype
    dim: int | None

    if TYPE_CHECKING:

        def read(self) -> contextlib.AbstractContextManager[Connection]: ...

        def generation(self, conn: Connection | None = None) -> int: ...

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
        for chunk in chunks(sorted(set(int(i) for i in ids)), 500):
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
