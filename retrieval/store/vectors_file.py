"""The vector-index cache file, vectors.faiss: its format, writing and verified reading.

    magic b"RTVFAISS" | u32 format | u64 generation | u64 payload bytes | u64 tombstones
    | 32-byte seal | 16-byte catalogue id | payload | tombstones (int64 ids)

The payload is the serialised FAISS index. The seal is a SHA-256 over the generation, both
sizes, the catalogue id and the SHA-256 of everything after the header (see `_seal`), so a
truncated or bit-flipped file is detected (`VectorsDamaged`) instead of being trusted, and
`generation` says which catalogue state it was built from. The catalogue id (a random UUID
the catalogue keeps; zeros for a catalogue made before ids existed) binds the file to its
catalogue: a sound file copied from another index with the same ids and generation is not
this index's. Tombstones: see `Built`. Format 1 files (no tombstones) and format 2 files (no
catalogue id) are still read.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import faiss
import numpy as np

from .files import atomic_write, open_regular

MAGIC = b"RTVFAISS"
FORMAT = 3
_PREFIX = struct.Struct("<8sI")
_HEADER_V1 = struct.Struct("<8sIQQ32s")
_HEADER_V2 = struct.Struct("<8sIQQQ32s")
_HEADER = struct.Struct("<8sIQQQ32s16s")


class VectorsDamaged(Exception):
    """The vector index file is missing, truncated or corrupt (internal: it is rebuilt)."""


def _no_ids() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass(frozen=True)
class Built:
    """An in-memory FAISS index, the catalogue generation it reflects and its tombstones.

    `tombstones` (sorted int64) are ids still stored in `index` that must never be returned.
    `catalog_id`: the hex id of the catalogue it was read as built from ("" for none).
    """

    index: Any
    generation: int
    tombstones: np.ndarray = field(default_factory=_no_ids)
    catalog_id: str = ""


def write(
    path: str, built_or_index: Any, generation: int | None = None, *, catalog_id: str = ""
) -> None:
    """Write a Built (or an index stamped with `generation`) atomically, streaming the payload,
    bound to the catalogue with hex id `catalog_id` ("" for none).

    The index is serialised straight into the temporary file (no second copy in memory);
    the header, written last, holds the payload size and the checksum.
    """
    if isinstance(built_or_index, Built):
        built = built_or_index
    else:
        assert generation is not None
        built = Built(built_or_index, generation)
    tombstones = np.ascontiguousarray(built.tombstones, dtype=np.int64)
    owner = _catalog_id_bytes(catalog_id)

    def _write(fh: BinaryIO) -> None:
        fh.write(b"\0" * _HEADER.size)
        digest = hashlib.sha256()
        size = _write_payload(fh, built.index, digest)
        tail = tombstones.tobytes()
        fh.write(tail)
        digest.update(tail)
        fh.seek(0)
        sealed = _seal(digest.digest(), built.generation, size, len(tombstones), owner)
        header = (MAGIC, FORMAT, built.generation, size, len(tombstones), sealed, owner)
        fh.write(_HEADER.pack(*header))

    atomic_write(path, _write, "vector index")


def _write_payload(fh: BinaryIO, index: Any, digest: Any) -> int:
    """Serialise `index` into `fh` chunk by chunk, feeding `digest`; returns the bytes written.

    An OSError from `fh` (a full disk) is re-raised as itself, not as FAISS's RuntimeError."""
    size = 0
    failure: list[OSError] = []

    def chunk(data: bytes) -> int:
        nonlocal size
        try:
            fh.write(data)
        except OSError as exc:
            failure.append(exc)
            raise
        digest.update(data)
        size += len(data)
        return len(data)

    writer = faiss.PyCallbackIOWriter(chunk)
    try:
        faiss.write_index(index, writer)
    except RuntimeError:
        if failure:
            raise failure[0] from None
        raise
    finally:
        del writer
    return size


def _seal(
    body_digest: bytes, generation: int, size: int, n_tomb: int, owner: bytes | None = None
) -> bytes:
    """The header's checksum: covers the generation, sizes and catalogue id too, not only the
    body, since a flipped generation would make readers skip the catalogue changes made after
    it. `owner` None: a format 2 file (no catalogue id)."""
    fields = struct.pack("<QQQ", generation, size, n_tomb) + (owner or b"")
    return hashlib.sha256(fields + body_digest).digest()


def _catalog_id_bytes(catalog_id: str) -> bytes:
    """A catalogue's hex id as the header's 16 bytes (zeros for "")."""
    raw = bytes.fromhex(catalog_id) if catalog_id else b""
    if len(raw) > 16:
        raise ValueError(f"catalogue id {catalog_id!r} is longer than 16 bytes")
    return raw.ljust(16, b"\0")


def read(path: str) -> Built:
    """Load and verify a vector index file; raises VectorsDamaged with the reason."""
    try:
        with open_regular(path) as fh:
            return _read(fh)
    except FileNotFoundError:
        raise VectorsDamaged("missing") from None
    except OSError as exc:
        raise VectorsDamaged(f"unreadable: {exc.strerror or exc}") from None


def _read(fh: BinaryIO) -> Built:
    prefix = fh.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise VectorsDamaged("truncated header")
    magic, fmt = _PREFIX.unpack(prefix)
    if magic != MAGIC or fmt not in (1, 2, FORMAT):
        raise VectorsDamaged("not a retrieval vector index")
    header_struct = {1: _HEADER_V1, 2: _HEADER_V2}.get(fmt, _HEADER)
    rest = fh.read(header_struct.size - _PREFIX.size)
    if len(rest) < header_struct.size - _PREFIX.size:
        raise VectorsDamaged("truncated header")
    fields = header_struct.unpack(prefix + rest)
    generation, size = fields[2], fields[3]
    digest_expected = fields[4] if fmt == 1 else fields[5]
    n_tomb = fields[4] if fmt >= 2 else 0
    owner = fields[6] if fmt == FORMAT else None
    actual = os.fstat(fh.fileno()).st_size - header_struct.size
    if actual != size + 8 * n_tomb:
        state = "truncated" if actual < size + 8 * n_tomb else "longer than its header says"
        raise VectorsDamaged(f"{state}: {max(actual, 0)} of {size + 8 * n_tomb} bytes")
    # Verify before FAISS parses anything: a flipped length field could make it allocate wildly.
    digest = hashlib.sha256()
    while block := fh.read(1 << 22):
        digest.update(block)
    found = digest.digest() if fmt == 1 else _seal(digest.digest(), generation, size, n_tomb, owner)
    if found != digest_expected:
        raise VectorsDamaged("checksum mismatch (corrupted bytes)")
    fh.seek(header_struct.size)
    reader = faiss.PyCallbackIOReader(fh.read)
    try:
        index = faiss.read_index(reader)
    except RuntimeError as exc:
        raise VectorsDamaged(f"FAISS cannot read it: {str(exc).splitlines()[0]}") from None
    finally:
        del reader
    if fh.tell() != header_struct.size + size:
        raise VectorsDamaged("payload size does not match its header")
    tail = fh.read()
    catalog_id = owner.hex() if owner and any(owner) else ""
    return Built(index, generation, np.frombuffer(tail, dtype=np.int64).copy(), catalog_id)
