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

import contextlib
import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .. import defaults
from ..embedding import threads as torch_threads
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
from ..specs import Preprocess
from ..store.catalog import Catalog, NewRow, RowState
from ..store.files import fault_point
from ..store.index_dir import IndexDir
from ..store.manifest import Manifest
from .balance import Balance, for_run
from .pipeline import decode_stream, default_batch_size

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
            _embed_all(index_dir, model, plan, options, report, progress)
        else:
            _commit_engine(index_dir, engine, plan, options, report, progress)
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


def _moved_from_elsewhere(
    catalog: Catalog, batch: list[FileResult], known: dict[bytes, RowState]
) -> list[tuple[int, bytes, int, int]]:
    """Decoded new files whose bytes equal a stored 'ok' row outside the scanned roots whose
    file is gone from disk (a renamed or moved root): (row id, new path, size, mtime_ns).

    One lookup by the indexed content hash per batch; a row still on disk is a copy."""
    new = [r for r in batch if r.pixels is not None and r.content_hash and r.path not in known]
    if not new:
        return []
    stored = catalog.find_by_hash({r.content_hash for r in new})
    moves, taken = [], set()
    for result in new:
        for row in stored.get(result.content_hash, []):
            if row.id in taken or row.path in known or row.size != result.size:
                continue
            if vanished(row.path):
                taken.add(row.id)
                moves.append((row.id, result.path, result.size, result.mtime_ns))
                break
    return moves


def _embed_all(
    index_dir: IndexDir,
    model: Embeds,
    plan: _Plan,
    options: IndexOptions,
    report: IndexReport,
    progress: Progress | None,
) -> None:
    if not plan.todo:
        return  # an unchanged tree is a stat walk: the model is never touched
    balance = for_run(model.device, options.workers)
    batch_size = options.batch_size or default_batch_size(model.device)
    total = len(plan.todo)
    if progress:
        progress(0, total)
    stream = decode_stream(
        [e.path for e in plan.todo],
        model.preprocess,
        options.max_megapixels,
        balance.workers,
        rules={e.path: (e.link, e.identity) for e in plan.todo},  # the file scanned, no other
        balance=balance,
    )
    batch: list[FileResult] = []
    done = decoded = 0  # decoded: images with pixels in `batch` (failures ride along)
    for result in stream:
        batch.append(result)
        decoded += result.pixels is not None
        if decoded >= batch_size:
            done += _flush_balanced(index_dir, model, batch, plan.known, report, balance)
            batch, decoded = [], 0
            if progress:
                progress(done, total)
    if batch:
        done += _flush_balanced(index_dir, model, batch, plan.known, report, balance, False)
        if progress:
            progress(done, total)


def _commit_engine(
    index_dir: IndexDir,
    engine: Engine,
    plan: _Plan,
    options: IndexOptions,
    report: IndexReport,
    progress: Progress | None,
) -> None:
    """`_embed_all` with the decoding and embedding done by `engine`: each batch it yields
    is committed by `_flush`, as the local engine's are."""
    if not plan.todo:
        return
    total, done = len(plan.todo), 0
    if progress:
        progress(0, total)
    manifest = index_dir.require_manifest()
    writer = engine.shard_writer(manifest, total)
    batches = engine.embed_files(manifest, plan.todo, options)
    with contextlib.closing(batches), writer or contextlib.nullcontext():
        for batch in batches:  # closing: an interruption shuts the engine down
            if writer is None:
                done += _flush(index_dir, _EMBEDDED, batch, plan.known, report)
            else:
                done += _shard(writer, batch, report)
            fault_point("batch-committed")
            if progress:
                progress(done, total)


def _shard(writer: Any, batch: list[FileResult], report: IndexReport) -> int:
    """Write an engine's batch to `writer` (its decoded files, counted as added; failures
    are reported only); returns how many files the batch held."""
    decoded = [r for r in batch if r.pixels is not None]
    vectors = [v for v in (r.pixels for r in decoded) if v is not None]
    if decoded:
        writer.write([_row(r, None) for r in decoded], np.stack(vectors))
    report.added += len(decoded)
    report.failed.extend((r.path, r.error or "unknown error") for r in batch if r.pixels is None)
    return len(batch)


class _Embedded:
    """The `Embeds` of an engine's batches: their `pixels` are the vectors already."""

    def embed(self, vectors: np.ndarray) -> np.ndarray:
        return vectors.astype(np.float32, copy=False)


_EMBEDDED: Any = _Embedded()


def _flush_balanced(
    index_dir: IndexDir,
    model: Embeds,
    batch: list[FileResult],
    known: dict[bytes, RowState],
    report: IndexReport,
    balance: Balance,
    full: bool = True,
) -> int:
    """`_flush`, timed in this process's CPU seconds for `balance` if the batch is `full`
    (a short last batch costs more per image: the model meets a new shape); torch's threads
    then follow the split. Records the workers and torch's threads in `report`."""
    started = time.process_time()
    held = _flush(index_dir, model, batch, known, report)
    fault_point("batch-committed")
    embedded = sum(r.pixels is not None for r in batch) if full else 0
    split = balance.embedded(embedded, time.process_time() - started)
    if not balance.fixed:  # else the caller's setting stands (`bench --threads`)
        torch_threads.set_count(split.threads)
    report.workers, report.threads = split.workers, torch_threads.count()
    return held


def _flush(
    index_dir: IndexDir,
    model: Embeds,
    batch: list[FileResult],
    known: dict[bytes, RowState],
    report: IndexReport,
) -> int:
    """Re-point the batch's files moved from other roots, then embed and store the rest in
    one transaction; returns how many files the batch held."""
    held = len(batch)
    moves = _moved_from_elsewhere(index_dir.catalog, batch, known)
    if moves:
        index_dir.catalog.repoint(moves)
        report.moved += len(moves)
        moved = {m[1] for m in moves}
        batch = [r for r in batch if r.path not in moved]
    decoded = [r for r in batch if r.pixels is not None]
    vectors = model.embed(np.stack([r.pixels for r in decoded])) if decoded else None
    by_path = dict(
        zip((r.path for r in decoded), vectors if vectors is not None else [], strict=True)
    )
    rows = [_row(r, by_path.get(r.path)) for r in batch]
    fault_point("batch-embedded")
    if rows:
        index_dir.catalog.store(rows, {r.path: known[r.path].id for r in batch if r.path in known})
    for r in batch:
        if r.pixels is None:
            report.failed.append((r.path, r.error or "unknown error"))
        elif r.path in known and known[r.path].status == "ok":
            report.updated += 1
        else:  # new, or a failure fixed since: new to search either way
            report.added += 1
    return held


def _row(result: FileResult, vector: np.ndarray | None) -> NewRow:
    return NewRow(
        path=result.path,
        size=result.size,
        mtime_ns=result.mtime_ns,
        content_hash=result.content_hash,
        width=result.width,
        height=result.height,
        format=result.format,
        vector=vector,
        error=result.error,
    )


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


def describe_failure(path: bytes, error: str) -> str:
    return f"{display(path)}: {error}"
