"""The journal of `retrieval dups --apply`: what will move, written before anything moves.

A journal is a JSON Lines file. Line 1, written atomically and fsynced (`atomic_write`)
before the first file moves, is the plan:

    {"journal": "retrieval dups", "version": 1, "index": DIR, "catalog_id": HEX,
     "move_to": DIR, "created": ISO-8601, "moves": [MOVE...], "skipped": [SKIP...],
     "sha256": HEX}

    MOVE: {"id", "source", "destination", "size", "mtime_ns", "device", "inode",
           "content_hash"}  (the file as the catalogue and an lstat knew it before moving)
    SKIP: {"id", "path", "reason"}

`sha256` is the SHA-256 of the plan's other fields as canonical JSON (sorted keys, no
spaces): an edited plan is refused. Each later line, appended and fsynced as the moves go,
is one event: {"moving": i} before move i starts, {"moved": i, "size", "mtime_ns",
"device", "inode"} once its file is at the destination and its row re-pointed, {"failed": i,
"error": TEXT} when it did not move. So after a crash or Ctrl-C the journal says which moves
finished, and at most one was under way; a torn last line (killed mid-write) is ignored.
Paths are `str` as `os.fsdecode` gives them (undecodable bytes as surrogate escapes), so any
name survives.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import StorageError, UsageError
from ..pathnames import display, to_str
from ..store.files import atomic_write, describe_os_error

FORMAT = "retrieval dups"
VERSION = 1


@dataclass(frozen=True)
class PlannedMove:
    """One file to move: its row id, from `source` to `destination` (absolute, raw bytes),
    and what it was before moving (size in bytes, mtime in ns, device and inode from lstat,
    the catalogue's 16-byte content hash)."""

    id: int
    source: bytes
    destination: bytes
    size: int
    mtime_ns: int
    device: int
    inode: int
    content_hash: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": to_str(self.source),
            "destination": to_str(self.destination),
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "device": self.device,
            "inode": self.inode,
            "content_hash": self.content_hash.hex(),
        }

    @classmethod
    def from_json(cls, item: Any) -> PlannedMove:
        """Raises ValueError (or KeyError/TypeError) for a malformed entry."""
        ints = [item[k] for k in ("id", "size", "mtime_ns", "device", "inode")]
        if not all(type(v) is int for v in ints):
            raise ValueError("id, size, mtime_ns, device and inode must be integers")
        texts = [item[k] for k in ("source", "destination", "content_hash")]
        if not all(isinstance(v, str) for v in texts):
            raise ValueError("source, destination and content_hash must be strings")
        source, destination = os.fsencode(texts[0]), os.fsencode(texts[1])
        if not (os.path.isabs(source) and os.path.isabs(destination)):
            raise ValueError("source and destination must be absolute paths")
        digest = bytes.fromhex(texts[2])
        return cls(ints[0], source, destination, ints[1], ints[2], ints[3], ints[4], digest)


@dataclass(frozen=True)
class Skip:
    """A member left where it is (`reason` says why); `id` is None when not in the index."""

    id: int | None
    path: bytes
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "path": to_str(self.path), "reason": self.reason}


@dataclass(frozen=True)
class JournalPlan:
    """A journal as read back: its plan, and the events recorded per move index."""

    path: str
    index: str
    catalog_id: str
    move_to: bytes
    moves: tuple[PlannedMove, ...]
    skipped: tuple[dict[str, Any], ...]
    started: frozenset[int]  # indexes into `moves` whose "moving" event was recorded
    #: index -> (device, inode) of the file at its destination, from the "moved" events
    landed: dict[int, tuple[int, int]]


def default_path(move_to: bytes) -> bytes:
    """MOVE_TO/retrieval-dups-YYYYmmddTHHMMSSZ.journal (UTC, to the second), with -2, -3 ...
    before the extension when that name is taken."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(move_to, f"retrieval-dups-{stamp}.journal".encode())
    number = 1
    while os.path.lexists(path):
        number += 1
        path = os.path.join(move_to, f"retrieval-dups-{stamp}-{number}.journal".encode())
    return path


def _digest(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def write_plan(
    path: bytes,
    *,
    index: str,
    catalog_id: str,
    move_to: bytes,
    moves: list[PlannedMove],
    skipped: list[Skip],
) -> None:
    """Create the journal at `path` holding the plan, atomically and fsynced.

    Raises UsageError when `path` exists (a journal is never overwritten), StorageError
    when it cannot be written (then nothing was created)."""
    if os.path.lexists(path):
        raise UsageError(
            f"the journal {display(path)} already exists; journals are never overwritten: "
            "name another with --journal FILE"
        )
    body = {
        "journal": FORMAT,
        "version": VERSION,
        "index": index,
        "catalog_id": catalog_id,
        "move_to": to_str(move_to),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "moves": [m.to_json() for m in moves],
        "skipped": [s.to_json() for s in skipped],
    }
    line = json.dumps({**body, "sha256": _digest(body)}) + "\n"
    atomic_write(to_str(path), lambda fh: fh.write(line.encode("utf-8")), "the dups journal")


class Recorder:
    """Appends events to a journal, each line fsynced before the call returns."""

    def __init__(self, path: bytes) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags)
        except OSError as exc:
            raise StorageError(
                f"could not open the journal {display(path)}: {describe_os_error(exc)}"
            ) from None

    def record(self, event: dict[str, Any]) -> None:
        data = (json.dumps(event) + "\n").encode("utf-8")
        try:
            os.write(self._fd, data)
            os.fsync(self._fd)
        except OSError as exc:
            raise StorageError(
                f"could not record progress in the journal {display(self.path)}: "
                f"{describe_os_error(exc)}; it still lists every planned move"
            ) from None

    def close(self) -> None:
        os.close(self._fd)


@contextlib.contextmanager
def recording(path: bytes) -> Iterator[Recorder]:
    recorder = Recorder(path)
    try:
        yield recorder
    finally:
        recorder.close()


def read(path: str | os.PathLike[str]) -> JournalPlan:
    """Read and check a journal; raises UsageError (one line) if it is not a whole, unedited
    journal of `retrieval dups --apply`."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            first, *rest = fh.read().split(b"\n")
        header = json.loads(first.decode("utf-8"))
        if not isinstance(header, dict) or header.get("journal") != FORMAT:
            raise ValueError("its first line is not a retrieval dups plan")
        if header.get("version") != VERSION:
            raise ValueError(f"version {header.get('version')!r}; this retrieval reads {VERSION}")
        body = {k: v for k, v in header.items() if k != "sha256"}
        if header.get("sha256") != _digest(body):
            raise ValueError("it was changed after it was written (its checksum differs)")
        moves = tuple(PlannedMove.from_json(m) for m in header["moves"])
        move_to = os.fsencode(header["move_to"])
        index, catalog_id = str(header["index"]), str(header["catalog_id"])
        skipped = tuple(header["skipped"])
    except FileNotFoundError:
        raise UsageError(f"no journal at {name}: give the file `--apply` wrote") from None
    except OSError as exc:
        raise UsageError(f"cannot read the journal {name}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"{name} is not a usable retrieval dups journal ({_reason(exc)}); nothing was changed"
        ) from None
    started, landed = _events(rest, len(moves))
    return JournalPlan(name, index, catalog_id, move_to, moves, skipped, started, landed)


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"the field {exc} is missing"
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        return "it is not JSON"
    return str(exc) or type(exc).__name__


def _events(lines: list[bytes], count: int) -> tuple[frozenset[int], dict[int, tuple[int, int]]]:
    """(started move indexes, {moved index: (device, inode)}) from the event lines; a torn
    or odd line is ignored (undo looks at the files themselves; the events say what the run
    got to, and which inode a copied file got)."""
    started, landed = set(), {}
    for raw in lines:
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        number = event.get("moving", event.get("moved"))
        if type(number) is not int or not 0 <= number < count:
            continue
        started.add(number)
        device, inode = event.get("device"), event.get("inode")
        if "moved" in event and type(device) is int and type(inode) is int:
            landed[number] = (device, inode)
    return frozenset(started), landed
