"""Indexing folders: scan, compare with the catalogue, re-point moves, embed the rest.

Incremental rules: a stored 'ok' file with the same size and mtime is skipped unread; one
whose size and mtime changed but whose bytes hash as stored (touched, copied back) only gets
its new size and mtime recorded; a changed or previously failed file is decoded again; a
stored file no longer found under a scanned root is removed (unless its folder could not be
read this time). A new file whose content hash equals that of a stored row whose file is
gone from disk (stat fails), under any root, is a move: the row is re-pointed without
re-embedding. A row whose file still exists is never moved (the new file is a copy).
Every batch is one transaction: an interruption loses at most the batch in progress.
The roots given are remembered in the catalogue, for `retrieval index` with no path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .. import defaults
from ..errors import BadImage, Interrupted
from ..pathnames import display, to_bytes, to_str
from ..reports import SKIP, JsonReport, json_field, rounded
from ..sources.decode import FileResult, hash_bytes, read_file
from ..sources.scan import (
    EmptyRoot,
    FileEntry,
    ScanResult,
    scan,
    supported_extensions,
    vanished,
)
from ..specs import ModelInfo, Preprocess, WeightsSpec
from ..store.catalog import Catalog, RowState
from ..store.files import fault_point
from ..store.index_dir import IndexDir
from ..store.manifest import Manifest
from . import committing

Progress = Callable[[int, int], None]


class Embeds(Protocol):
    """What indexing needs from a model: its preprocessing, its device ("cpu" or "cuda",
    for the worker and batch defaults) and a batch -> vectors call. `device` and `embed`
    are only used when a file needs embedding, so a model may load lazily."""

    @property
    def preprocess(self) -> Preprocess: ...

    @property
    def device(self) -> str: ...

    def embed(self, pixels: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelRequest:
    """The model an engine's workers load as the run begins: an existing index's own
    (`manifest`: its weights are checked against it), or a new index's `name` and `weights`."""

    name: str
    weights: WeightsSpec
    manifest: Manifest | None = None


@dataclass(frozen=True)
class EngineModel:
    """A new index's model as an engine's workers loaded it: what its manifest records
    (`info`, `precision` as resolved there)."""

    info: ModelInfo
    precision: str


class Engine(Protocol):
    """Decodes and embeds the files a run must embed somewhere else (a Ray cluster); the
    run still commits each batch here, with the local engine's transactions."""

    def embed_files(
        self, manifest: Manifest, todo: list[FileEntry], options: IndexOptions
    ) -> Generator[list[FileResult], None, None]:
        """Batches of `todo`, each file exactly once: a decoded file's `pixels` holds its
        vector ((d,) float32, L2-normalised), a failed one has no pixels and its error."""
        ...

    def shard_writer(self, manifest: Manifest, rows: int) -> Any:
        """Where the batches go instead of the catalogue (a `layout.ShardWriter`), or None."""
        ...

    def start(self, model: ModelRequest) -> None:
        """Begin getting ready, `model` loaded on the workers, in the background while the
        run scans and plans."""
        ...

    def model(self) -> EngineModel:
        """The model the workers loaded (waits for them, then tells the user what runs
        where); raises what loading it raised."""
        ...

    def close(self) -> None:
        """Release what `start` or `embed_files` took; called on every path."""
        ...


@dataclass(frozen=True)
class IndexOptions:
    """Knobs of one indexing run (defaults in `retrieval.defaults`)."""

    exclude: tuple[str, ...] = ()
    follow_symlinks: bool = False
    max_megapixels: float = defaults.MAX_MEGAPIXELS
    batch_size: int | None = None  # None: `pipeline.default_batch_size` (32 on the CPU)
    workers: int | None = None  # None: `pipeline.plan_resources` for the model's device


def _failures(failed: list[tuple[bytes, str]]) -> list[dict[str, str]]:
    return [{"path": to_str(p), "error": e} for p, e in failed]


@dataclass
class IndexReport(JsonReport):
    """What a run did. `failed` holds (path bytes, reason) for this run's failures."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    failed: list[tuple[bytes, str]] = json_field(default_factory=list, json=_failures)
    seconds: float = json_field(0.0, json=rounded(3))
    empty_roots: list[EmptyRoot] = json_field(default_factory=list, json=SKIP)  # no image
    #: Remembered roots gone from disk with nothing left under them (all moved): forgotten.
    forgotten_roots: list[bytes] = json_field(default_factory=list, json=SKIP)
    #: The split of the CPUs the run ended with (decode processes, torch threads); None when
    #: nothing was embedded. Balanced while running unless --workers was given.
    workers: int | None = json_field(None, omit_none=True)
    threads: int | None = json_field(None, omit_none=True)

    def notices(self) -> list[str]:
        """One-line notices for stderr: the folders given that held no image, the roots
        forgotten."""
        forgotten = [
            f"{display(root)} no longer exists and no indexed image is left under it: forgotten"
            for root in self.forgotten_roots
        ]
        return [empty_root_notice(root) for root in self.empty_roots] + forgotten

    def summary(self) -> str:
        return (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.moved} moved, {self.removed} removed, {len(self.failed)} failed "
            f"in {self.seconds:.1f} s"
        )


@dataclass
class _Plan:
    todo: list[FileEntry]
    known: dict[bytes, RowState]
    unchanged: int
    missing: list[RowState]
    moves: list[tuple[int, bytes, int, int]]
    restat: list[tuple[int, int, int]]  # (id, size, mtime_ns) of touched, unchanged files


def index_paths(
    index_dir: IndexDir,
    model: Embeds,
    roots: Sequence[str | os.PathLike[str]],
    options: IndexOptions = IndexOptions(),
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> IndexReport:
    """Bring the index up to date with `roots` (folders or files). See the module docstring.
    `engine`: where the files to embed are decoded and embedded [None: here, with `model`].

    Raises Interrupted (with the partial report) on Ctrl-C, after keeping finished batches.
    """
    started = time.monotonic()
    report = IndexReport()
    found = scan(roots, exclude=options.exclude, follow_symlinks=options.follow_symlinks)
    fault_point("scanned")
    report.failed.extend((p.path, p.error) for p in found.problems)
    report.empty_roots = found.empty_roots
    index_dir.catalog.remember_roots([to_bytes(root) for root in roots])
    plan = _plan(index_dir, roots, found)
    report.unchanged = plan.unchanged
    if plan.restat:
        index_dir.catalog.restat(plan.restat)
    if plan.moves:
        index_dir.catalog.repoint(plan.moves)
        report.moved = len(plan.moves)
    if plan.missing:
        index_dir.catalog.remove([r.id for r in plan.missing])
        report.removed = len(plan.missing)
    try:
        if engine is None:
            committing.embed_all(index_dir, model, plan.todo, plan.known, options, report, progress)
        else:
            committing.commit_engine(
                index_dir, engine, plan.todo, plan.known, options, report, progress
            )
    except KeyboardInterrupt:
        report.seconds = time.monotonic() - started
        kept = report.added + report.updated
        raise Interrupted(
            f"interrupted: kept {kept} newly embedded images from finished batches; "
            "run the same command again to resume",
            report,
        ) from None
    report.forgotten_roots = _forget_emptied_roots(index_dir.catalog)
    index_dir.sync_vectors()
    report.seconds = time.monotonic() - started
    return report


def _forget_emptied_roots(catalog: Catalog) -> list[bytes]:
    """Forget the remembered roots that are gone from disk and hold no row any more (a
    renamed folder whose images all moved): no image of theirs is kept, so nothing for
    `prune` to do. Roots gone with rows left stay remembered (an unplugged drive)."""
    _, gone = split_roots(catalog.remembered_roots())
    emptied = [root for root in gone if not catalog.rows_at_or_under(root)]
    if emptied:
        catalog.forget_roots(emptied)
    return emptied


def _plan(index_dir: IndexDir, roots: Sequence[Any], found: ScanResult) -> _Plan:
    folders = [os.fsencode(os.path.abspath(r)) for r in roots if os.path.isdir(r)]
    files = [os.fsencode(os.path.abspath(r)) for r in roots if not os.path.isdir(r)]
    stored = index_dir.catalog.rows_under(folders, files)
    known = {row.path: row for row in stored}
    seen = {entry.path for entry in found.files}
    unknown = set(found.unreadable_dirs())  # unreadable folders and files: keep their rows
    blind = [d.rstrip(b"/") + b"/" for d in unknown]
    missing = [
        r
        for r in stored
        if r.path not in seen
        and r.path not in unknown
        and not any(r.path.startswith(d) for d in blind)
    ]
    changed, unchanged = [], 0
    for entry in found.files:
        row = known.get(entry.path)
        if row and row.status == "ok" and (row.size, row.mtime_ns) == (entry.size, entry.mtime_ns):
            unchanged += 1
        else:
            changed.append(entry)
    todo, restat = _same_content(changed, known)
    moves = _find_moves(todo, known, missing)
    moved_paths = {m[1] for m in moves}
    moved_ids = {m[0] for m in moves}
    return _Plan(
        todo=[e for e in todo if e.path not in moved_paths],
        known=known,
        unchanged=unchanged + len(restat),
        missing=[r for r in missing if r.id not in moved_ids],
        moves=moves,
        restat=restat,
    )


def _same_content(
    changed: list[FileEntry], known: dict[bytes, RowState]
) -> tuple[list[FileEntry], list[tuple[int, int, int]]]:
    """Split files whose size or mtime changed into (to decode, [(id, size, mtime_ns)] of
    those whose bytes still hash as stored). Only same-size files are read: a new size is
    new content."""
    todo, restat = [], []
    for entry in changed:
        row = known.get(entry.path)
        if row and row.status == "ok" and row.content_hash and row.size == entry.size:
            try:
                data, st = read_file(
                    entry.path, follow_symlinks=entry.link, identity=entry.identity
                )
            except BadImage:
                todo.append(entry)  # decoding will record why
                continue
            if st.st_size == row.size and hash_bytes(data) == row.content_hash:
                restat.append((row.id, st.st_size, st.st_mtime_ns))
                continue
        todo.append(entry)
    return todo, restat


def _find_moves(
    todo: list[FileEntry], known: dict[bytes, RowState], missing: list[RowState]
) -> list[tuple[int, bytes, int, int]]:
    """New files whose bytes equal a vanished file's: (row id, new path, size, mtime_ns).

    Only rows under the scanned roots, found missing by the walk and gone on a stat (an
    excluded file still exists: a new file equal to it is a copy); `_moved_from_elsewhere`
    finds moves from other roots once files are hashed by decoding."""
    gone: dict[tuple[int, bytes], list[RowState]] = {}
    sizes = set()
    for row in missing:
        if row.status == "ok" and row.content_hash and vanished(row.path):
            gone.setdefault((row.size, row.content_hash), []).append(row)
            sizes.add(row.size)
    moves = []
    for entry in todo:
        if entry.path in known or entry.size not in sizes:
            continue
        try:
            data, st = read_file(entry.path, follow_symlinks=entry.link, identity=entry.identity)
        except BadImage:
            continue
        rows = gone.get((st.st_size, hash_bytes(data)))
        if rows:
            moves.append((rows.pop().id, entry.path, st.st_size, st.st_mtime_ns))
    return moves


def split_roots(roots: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Remembered roots as (still on disk, gone). Only a stat failing with ENOENT or ENOTDIR
    counts as gone: an unreadable path is still scanned (and reported)."""
    present, gone = [], []
    for root in roots:
        (gone if vanished(root) else present).append(root)
    return present, gone


def empty_root_notice(root: EmptyRoot) -> str:
    """'no images found in DIR ...': what the folder held instead, and what is indexed."""
    shown = display(root.path)
    if not root.skipped:
        return f"no images found in {shown}: it holds no files"
    labels = [(ext or "no extension", n) for ext, n in root.skipped.items()]
    total = sum(root.skipped.values())
    listed = ", ".join(f"{label} {n}" for label, n in sorted(labels, key=lambda x: (-x[1], x[0])))
    indexed = " ".join(sorted(supported_extensions()))
    return (
        f"no images found in {shown} (skipped {total} file{'s' * (total != 1)}: {listed}); "
        f"indexed extensions: {indexed}"
    )
