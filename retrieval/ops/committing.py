"""Embedding the files an index run planned, and committing them batch by batch.

The local loop (`embed_all`: decode workers, the model here, the split between them
rebalanced as it runs) and an engine's batches (`commit_engine`: vectors made elsewhere) end
the same way: `_flush` re-points files moved from other roots, embeds the rest and stores the
batch in one transaction, so an interruption loses at most the batch in progress.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..embedding import threads as torch_threads
from ..sources.decode import FileResult
from ..sources.scan import FileEntry, vanished
from ..store.catalog import Catalog, NewRow, RowState
from ..store.files import fault_point
from ..store.index_dir import IndexDir
from .balance import Balance, for_run
from .pipeline import decode_stream, default_batch_size

if TYPE_CHECKING:
    from .indexing import Embeds, Engine, IndexOptions, IndexReport, Progress


def embed_all(
    index_dir: IndexDir,
    model: Embeds,
    todo: list[FileEntry],
    known: dict[bytes, RowState],
    options: IndexOptions,
    report: IndexReport,
    progress: Progress | None,
) -> None:
    if not todo:
        return  # an unchanged tree is a stat walk: the model is never touched
    balance = for_run(model.device, options.workers)
    batch_size = options.batch_size or default_batch_size(model.device)
    total = len(todo)
    if progress:
        progress(0, total)
    stream = decode_stream(
        [e.path for e in todo],
        model.preprocess,
        options.max_megapixels,
        balance.workers,
        rules={e.path: (e.link, e.identity) for e in todo},  # the file scanned, no other
        balance=balance,
    )
    batch: list[FileResult] = []
    done = decoded = 0  # decoded: images with pixels in `batch` (failures ride along)
    for result in stream:
        batch.append(result)
        decoded += result.pixels is not None
        if decoded >= batch_size:
            done += _flush_balanced(index_dir, model, batch, known, report, balance)
            batch, decoded = [], 0
            if progress:
                progress(done, total)
    if batch:
        done += _flush_balanced(index_dir, model, batch, known, report, balance, False)
        if progress:
            progress(done, total)


def commit_engine(
    index_dir: IndexDir,
    engine: Engine,
    todo: list[FileEntry],
    known: dict[bytes, RowState],
    options: IndexOptions,
    report: IndexReport,
    progress: Progress | None,
) -> None:
    """`embed_all` with the decoding and embedding done by `engine`: each batch it yields
    is committed by `_flush`, as the local engine's are."""
    if not todo:
        return
    total, done = len(todo), 0
    if progress:
        progress(0, total)
    manifest = index_dir.require_manifest()
    writer = engine.shard_writer(manifest, total)
    batches = engine.embed_files(manifest, todo, options)
    with contextlib.closing(batches), writer or contextlib.nullcontext():
        for batch in batches:  # closing: an interruption shuts the engine down
            if writer is None:
                done += _flush(index_dir, _EMBEDDED, batch, known, report)
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
