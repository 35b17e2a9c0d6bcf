"""Putting back what `retrieval dups --apply` moved: `retrieval dups --undo JOURNAL`.

Every planned move of the journal is looked at on disk and in the catalogue, newest first:
a file at its destination whose row (same id, same content hash) is at either path, with
the size and mtime recorded (and the inode, where a rename kept it), is moved back without
overwriting anything and its row re-pointed. A file already back is left alone (so running
the undo twice is harmless); a file changed, removed, or with something at both places is a
per-file failure, and the others go on.
"""

from __future__ import annotations

import os

from ..errors import Interrupted, UsageError
from ..pathnames import display
from ..store.catalog_schema import RowState
from ..store.files import describe_os_error
from ..store.index_dir import IndexDir
from . import dups_journal as journal
from .dups_apply import ApplyReport, FileOutcome
from .dups_journal import PlannedMove
from .dups_moving import MoveRefused, describe_change, lstat_or_none, move_file, same_file


def undo(index_dir: IndexDir, journal_path: str | os.PathLike[str]) -> ApplyReport:
    """Put back every file a journal moved and re-point its row (see the module docstring).

    `index_dir` must hold the writer lock. Raises UsageError (not a usable journal, or one
    written for another index), Interrupted (Ctrl-C: run the same undo again)."""
    plan = journal.read(journal_path)
    if plan.catalog_id != index_dir.catalog_id:
        raise UsageError(
            f"the journal {plan.path} was written for the index {plan.index}, not "
            f"{index_dir.directory}; run the undo with --index {plan.index}"
        )
    paths = [p for m in plan.moves for p in (m.source, m.destination)]
    rows = {r.id: r for r in index_dir.catalog.rows_under([], paths)}
    outcomes: dict[str, list[FileOutcome]] = {"moved": [], "skipped": [], "failed": []}
    try:
        for number in reversed(range(len(plan.moves))):
            move = plan.moves[number]
            landed = plan.landed.get(number)
            kind, reason = _undo_one(index_dir, move, rows.get(move.id), landed)
            outcomes[kind].append(FileOutcome(move.id, move.source, move.destination, reason))
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted after moving back {len(outcomes['moved'])} file(s); run the same "
            "undo again to finish (files already back are left alone)"
        ) from None
    finally:
        if outcomes["moved"]:
            index_dir.sync_vectors()
    return ApplyReport(
        plan.path,
        plan.move_to,
        True,
        tuple(outcomes["moved"]),
        tuple(outcomes["skipped"]),
        tuple(outcomes["failed"]),
    )


def _undo_one(
    index_dir: IndexDir,
    move: PlannedMove,
    row: RowState | None,
    landed: tuple[int, int] | None,
) -> tuple[str, str]:
    """("moved" | "skipped" | "failed", reason) for putting one planned move back;
    `landed`: (device, inode) the journal recorded at the destination, if it did."""
    if row is None or row.path not in (move.source, move.destination):
        return "failed", (
            f"the index no longer holds image {move.id} at either path (re-indexed or pruned "
            "since); the file was left where it is"
        )
    if row.content_hash != move.content_hash:
        return "failed", "the index's image at this path has other bytes now; left as it is"
    at_source, at_destination = lstat_or_none(move.source), lstat_or_none(move.destination)
    if at_destination is None:
        if at_source is None:
            return "failed", "the file is gone from both its old and its new place"
        if not same_file(at_source, move.size, move.mtime_ns, None):
            return "failed", describe_change(at_source, "file at its old place")
        _repoint(index_dir, move, row, at_source)
        return "skipped", "already in its old place"
    if at_source is not None:
        return "failed", (
            f"a file is at both {display(move.source)} and {display(move.destination)}; "
            "both were left as they are"
        )
    if landed is None and at_destination.st_dev == move.device:
        landed = (move.device, move.inode)  # killed before recording: a rename keeps the inode
    try:
        found = move_file(
            move.destination,
            move.source,
            size=move.size,
            mtime_ns=move.mtime_ns,
            ino=landed,
            content_hash=move.content_hash,
            base=None,
        )
    except MoveRefused as exc:
        reason = str(exc).replace("the file ", "the moved file ", 1)
        return "failed", f"{reason}; it was left at {display(move.destination)}"
    except OSError as exc:
        return "failed", describe_os_error(exc)
    _repoint(index_dir, move, row, found)
    return "moved", ""


def _repoint(index_dir: IndexDir, move: PlannedMove, row: RowState, found: os.stat_result) -> None:
    if (row.path, row.size, row.mtime_ns) != (move.source, found.st_size, found.st_mtime_ns):
        index_dir.catalog.repoint([(move.id, move.source, found.st_size, found.st_mtime_ns)])
