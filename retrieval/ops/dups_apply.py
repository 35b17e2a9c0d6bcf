"""Acting on duplicate groups, safely: `retrieval dups --apply --move-to DIR` and `--undo`.

Nothing is deleted. `apply_moves` moves the non-keeper members of each group into a folder
and `dups_undo.undo` puts them back, both holding the index's writer lock:

- **Where.** A member under a remembered root R goes to DIR/<its path relative to R> (the
  longest root that holds it; a file root goes to DIR/<its name>); a member under no
  remembered root goes to DIR/<its absolute path>, e.g. DIR/home/u/Pictures/a.jpg.
- **Refused folders.** DIR inside the index folder, or inside (or equal to) a remembered
  root, is refused: the next `retrieval index` of that root would add the moved files back
  as new copies.
- **Skipped members** (with a reason, in the report and the journal): keepers and reference
  files (never moved), members the catalogue no longer holds at that path, files gone,
  files that are not regular files (symlinks are never followed), files changed since
  indexing (size or mtime differ from the catalogue's), a destination that exists or that
  two members would share, a destination the catalogue already holds a row for.
- **Journal first.** The plan is written (atomically, fsynced) before anything moves, and
  each move is recorded as it goes (see `dups_journal`): after Ctrl-C or a kill the journal
  says what moved, and `undo` puts it back.
- **The index follows the files.** Each moved file's row is re-pointed to its new path
  (`Catalog.repoint`: path, size, mtime; the vector and id stay, nothing is re-embedded), in
  its own transaction right after the move. The moved files are on disk, so `prune` keeps
  them, and they lie outside every root, so `index` neither re-adds nor drops them;
  `search` finds them at their new paths.
- **Undo** checks each file against the journal and the catalogue (same row, same content
  hash, same size and mtime) and moves it back without overwriting anything; a file changed
  or removed since is a per-file failure and the others continue. Running it twice is
  harmless: files already back are reported as such.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import Interrupted, StorageError, UsageError
from ..pathnames import display, printable, to_bytes, to_str
from ..store.catalog_schema import RowState
from ..store.files import describe_os_error, fault_point
from ..store.index_dir import IndexDir
from . import dups_journal as journal
from .dups_journal import PlannedMove, Skip
from .dups_moving import MoveRefused, describe_change, lstat_or_none, move_file, same_file

#: Files listed one per line in the text report.
LISTED = 50


@dataclass(frozen=True)
class MoveMember:
    """A group member: its catalogue row id and path (absolute, raw bytes); `reference`:
    under a `--reference` folder (never moved)."""

    id: int
    path: bytes
    reference: bool = False


@dataclass(frozen=True)
class MoveGroup:
    """One duplicate group: the members kept where they are, and those to move."""

    keep: tuple[MoveMember, ...]
    move: tuple[MoveMember, ...]


@dataclass(frozen=True)
class MovePlan:
    """What `apply_moves` is asked to do: a sequence of groups."""

    groups: tuple[MoveGroup, ...]


def plan_from_report(report: Any) -> MovePlan:
    """The move plan of a `DupsReport` (ops.dups): per group, the keepers (`is_keeper`,
    which includes every reference member) stay and the others move."""
    groups = []
    for group in report.groups:
        members = [(MoveMember(m.id, m.path, m.is_reference), m.is_keeper) for m in group.members]
        keep = tuple(m for m, kept in members if kept)
        move = tuple(m for m, kept in members if not kept)
        groups.append(MoveGroup(keep, move))
    return MovePlan(tuple(groups))


@dataclass(frozen=True)
class FileOutcome:
    """One member: moved from `source` to `destination` (undo: back), or not, and why."""

    id: int | None
    source: bytes
    destination: bytes | None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "source": to_str(self.source)}
        out["destination"] = None if self.destination is None else to_str(self.destination)
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class ApplyReport:
    """What `apply_moves` or `undo` (`undo=True`) did: files moved (back), left alone
    (`skipped`, with reasons), and per-file failures; `journal` is the journal's path."""

    journal: str
    move_to: bytes
    undo: bool = False
    moved: tuple[FileOutcome, ...] = ()
    skipped: tuple[FileOutcome, ...] = ()
    failed: tuple[FileOutcome, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": "undo" if self.undo else "apply",
            "journal": self.journal,
            "move_to": to_str(self.move_to),
            "moved": [o.to_dict() for o in self.moved],
            "skipped": [o.to_dict() for o in self.skipped],
            "failed": [o.to_dict() for o in self.failed],
        }

    def lines(self) -> list[str]:
        """The report for people: what moved, then what was left alone or failed and why."""
        if self.undo:
            out = [f"moved back {len(self.moved)} file(s)"]
        else:
            out = [f"moved {len(self.moved)} file(s) to {display(self.move_to)}"]
        arrow = "<-" if self.undo else "->"
        out += _listed(
            [f"  {display(o.source)} {arrow} {display(o.destination or b'')}" for o in self.moved]
        )
        for title, items in (("left alone", self.skipped), ("failed", self.failed)):
            if items:
                out.append(f"{title}: {len(items)} file(s)")
                out += _listed([f"  {display(o.source)}: {o.reason}" for o in items])
        if not self.undo:
            name = printable(self.journal)
            out.append(f"journal: {name} (`retrieval dups --undo {name}` puts them back)")
        return out


def _listed(lines: list[str]) -> list[str]:
    """The first LISTED lines, and how many more there are."""
    more = len(lines) - LISTED
    return lines[:LISTED] + ([f"  ... and {more} more (use --json for all)"] if more > 0 else [])


# -- apply ------------------------------------------------------------------------------------


def apply_moves(
    index_dir: IndexDir,
    plan: MovePlan,
    move_to: str | os.PathLike[str] | bytes,
    journal_path: str | os.PathLike[str] | bytes | None = None,
) -> ApplyReport:
    """Move every plan member not kept into `move_to` (see the module docstring), writing
    the journal (default MOVE_TO/retrieval-dups-<UTC time>.journal) first.

    `index_dir` must hold the writer lock. Raises UsageError (a refused folder, an existing
    journal), StorageError (the journal cannot be written: nothing moved), Interrupted
    (Ctrl-C: the journal says what moved)."""
    roots = index_dir.catalog.remembered_roots()
    target = check_move_to(index_dir, to_bytes(move_to), roots)
    moves, skipped = _prepare(index_dir, plan, target, roots)
    where = to_bytes(journal_path) if journal_path is not None else journal.default_path(target)
    journal.write_plan(
        where,
        index=index_dir.directory,
        catalog_id=index_dir.catalog_id,
        move_to=target,
        moves=moves,
        skipped=skipped,
    )
    done: list[FileOutcome] = []
    failed: list[FileOutcome] = []

    def report() -> ApplyReport:
        left = tuple(FileOutcome(s.id, s.path, None, s.reason) for s in skipped)
        return ApplyReport(to_str(where), target, False, tuple(done), left, tuple(failed))

    try:
        with journal.recording(where) as recorder:
            _move_all(index_dir, moves, target, recorder, done, failed)
    except KeyboardInterrupt:
        name = to_str(where)
        raise Interrupted(
            f"interrupted after moving {len(done)} of {len(moves)} file(s); the journal "
            f"{name} says which: `retrieval dups --undo {name}` puts them back",
            report(),
        ) from None
    except StorageError as exc:  # the catalogue or the journal failed: undo knows the rest
        name = to_str(where)
        raise StorageError(
            f"{exc}; the journal {name} says what moved: `retrieval dups --undo {name}` "
            "puts it back"
        ) from None
    finally:
        if done:
            index_dir.sync_vectors()
    return report()


def _move_all(
    index_dir: IndexDir,
    moves: list[PlannedMove],
    target: bytes,
    recorder: journal.Recorder,
    done: list[FileOutcome],
    failed: list[FileOutcome],
) -> None:
    """Make the moves in order, recording each in the journal and in `done` or `failed`."""
    for number, move in enumerate(moves):
        recorder.record({"moving": number})
        try:
            found = _move_one(index_dir, move, target)
        except MoveRefused as exc:
            recorder.record({"failed": number, "error": str(exc)})
            failed.append(FileOutcome(move.id, move.source, move.destination, str(exc)))
            continue
        recorder.record({"moved": number, **_stat_fields(found)})
        done.append(FileOutcome(move.id, move.source, move.destination))


def _move_one(index_dir: IndexDir, move: PlannedMove, target: bytes) -> os.stat_result:
    """Move one planned file and re-point its row; raises MoveRefused if it did not move."""
    try:
        found = move_file(
            move.source,
            move.destination,
            size=move.size,
            mtime_ns=move.mtime_ns,
            ino=(move.device, move.inode),
            content_hash=move.content_hash,
            base=target,
        )
    except OSError as exc:  # a folder that cannot be made, an fsync that fails ...
        raise MoveRefused(describe_os_error(exc)) from None
    fault_point("dups-moved")  # the crash tests: moved on disk, row not yet re-pointed
    index_dir.catalog.repoint([(move.id, move.destination, found.st_size, found.st_mtime_ns)])
    return found


def _stat_fields(found: os.stat_result) -> dict[str, int]:
    return {
        "size": found.st_size,
        "mtime_ns": found.st_mtime_ns,
        "device": found.st_dev,
        "inode": found.st_ino,
    }


def check_move_to(index_dir: IndexDir, move_to: bytes, roots: Sequence[bytes]) -> bytes:
    """The real path of the move-to folder, created if missing; raises UsageError when it is
    inside the index folder or a remembered root or holds a root, StorageError when it
    cannot be made."""
    target = os.path.realpath(move_to)
    index = os.path.realpath(os.fsencode(index_dir.directory))
    if _within(target, index):
        raise UsageError(
            f"--move-to {display(move_to)} is inside the index folder {display(index)}; "
            "choose a folder outside it"
        )
    for root in roots:
        for r in {root, os.path.realpath(root)}:
            if _within(r, target) and r != target:
                raise UsageError(
                    f"--move-to {display(move_to)} holds the indexed root {display(root)}: "
                    "moved files would mix with the indexed ones; choose a folder outside "
                    "every indexed root"
                )
        if any(_within(target, r) for r in {root, os.path.realpath(root)}):
            raise UsageError(
                f"--move-to {display(move_to)} is inside the indexed root {display(root)}: the "
                "next `retrieval index` would add the moved files back as new copies; "
                "choose a folder outside every indexed root"
            )
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the --move-to folder {display(target)}: {describe_os_error(exc)}"
        ) from None
    return target


def _within(path: bytes, folder: bytes) -> bool:
    return path == folder or path.startswith(folder.rstrip(b"/") + b"/")


def destination_for(path: bytes, roots: Iterable[bytes], target: bytes) -> bytes:
    """Where `path` goes in `target`: relative to the longest remembered root holding it
    (a file root: its name), else its whole absolute path under `target`."""
    holding = [r for r in roots if _within(path, r)]
    if not holding:
        return os.path.join(target, path.lstrip(b"/"))
    root = max(holding, key=len)
    relative = os.path.basename(path) if path == root else path[len(root.rstrip(b"/")) + 1 :]
    return os.path.join(target, relative)


def _prepare(
    index_dir: IndexDir, plan: MovePlan, target: bytes, roots: Sequence[bytes]
) -> tuple[list[PlannedMove], list[Skip]]:
    """The moves to make, in plan order, and the members left alone with the reason."""
    kept = {m.id for g in plan.groups for m in g.keep}
    index = os.path.realpath(os.fsencode(index_dir.directory))
    guarded = [(index, "the index folder")] + [
        (r, "the indexed root") for root in roots for r in {root, os.path.realpath(root)}
    ]
    members = list({m.id: m for g in plan.groups for m in g.move}.values())
    wanted = {m.id: destination_for(m.path, roots, target) for m in members}
    rows = {
        r.path: r
        for r in index_dir.catalog.rows_under([], [m.path for m in members] + [*wanted.values()])
    }
    moves: list[PlannedMove] = []
    skipped: list[Skip] = []
    taken: set[bytes] = set()
    for member in members:
        destination = wanted[member.id]
        if _within(member.path, target):  # moved aside by an earlier --apply
            skipped.append(Skip(member.id, member.path, "already in the --move-to folder"))
            continue
        inside = [(f, what) for f, what in guarded if _within(destination, f)]
        if inside:  # a move-to folder above the index: ROOT/index/x.jpg -> MOVE_TO/index/x.jpg
            folder, what = inside[0]
            reason = f"{display(destination)} would lie inside {what} {display(folder)}"
            skipped.append(Skip(member.id, member.path, reason))
            continue
        reason, move = _check_member(member, kept, rows, destination, taken)
        if move is None:
            skipped.append(Skip(member.id, member.path, reason))
        else:
            taken.add(destination)
            moves.append(move)
    return moves, skipped


def _check_member(
    member: MoveMember,
    kept: set[int],
    rows: dict[bytes, RowState],
    destination: bytes,
    taken: set[bytes],
) -> tuple[str, PlannedMove | None]:
    """(reason, None) for a member left alone, ("", its move) for one to move."""
    if member.reference:
        return "a reference file (under --reference): never moved", None
    if member.id in kept:
        return "a keeper of another group: never moved", None
    row = rows.get(member.path)
    if row is None or row.id != member.id or row.status != "ok" or not row.content_hash:
        return "the index no longer holds this image at this path; run retrieval dups again", None
    found = lstat_or_none(member.path)
    if found is None or not same_file(found, row.size, row.mtime_ns, None):
        why = describe_change(found, "file")
        if found is not None and why.endswith("recorded)"):
            why = "the file changed since it was indexed (size or mtime differ from the index)"
        return f"{why}; run retrieval index, then retrieval dups again", None
    if os.path.lexists(destination) or destination in taken:
        what = "already exists" if destination not in taken else "is another member's destination"
        return f"{display(destination)} {what}; nothing is ever overwritten", None
    if destination in rows:
        return (
            f"the index already holds an image at {display(destination)}; "
            "run retrieval prune first",
            None,
        )
    move = PlannedMove(
        row.id,
        member.path,
        destination,
        row.size,
        row.mtime_ns,
        found.st_dev,
        found.st_ino,
        row.content_hash,
    )
    return "", move
