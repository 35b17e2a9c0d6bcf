"""Embeddings into an index from `retrieval export` files: .parquet, .npy + .rows.json, or a
clip-retrieval layout folder (img_emb/, metadata/, manifest.json).

An import runs in two passes so that a bad file changes nothing:

1. `read_files` (no index opened for writing, nothing created): reads each file's header and
   manifest, refuses another model than the index's, then streams every row of every file
   through `import_checks` (a batch at a time: memory stays bounded whatever the files' size).
2. `import_files` (under the writer lock): checks the files were not replaced since, then
   streams them again into the catalogue, `IMPORT_BATCH` rows per transaction (rows of several
   files share a transaction). A new index that fails or is interrupted here is removed again.

Imported rows need no image file: they keep the exported path, size, mtime and content hash
(npy exports carry only paths: size and mtime are stored as 0, so a later `retrieval index`
over a folder that holds the file re-embeds it, and drops the row if the file is not there).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from .. import defaults
from ..errors import (
    ImportFormatError,
    IndexIncompatible,
    IndexNotFound,
    Interrupted,
    StorageError,
    UsageError,
)
from ..reports import JsonReport, json_field, rounded
from ..store.catalog import NewRow
from ..store.files import remove_stale_temps
from ..store.index_dir import IndexDir
from ..store.manifest import Manifest
from . import import_checks as checks
from .import_foreign import Fallback, read_manifest_file
from .import_sources import Source, open_source

#: Rows per catalogue transaction during an import (an interruption loses at most one).
IMPORT_BATCH = 20_000


@dataclass(frozen=True)
class ImportReport(JsonReport):
    """What an import stored: new rows, rows that replaced a stored path, the files read."""

    added: int
    updated: int
    dim: int
    files: tuple[str, ...]
    seconds: float = json_field(json=rounded(3))

    def summary(self) -> str:
        return (
            f"imported {self.added + self.updated} embeddings ({self.dim}-d): {self.added} added, "
            f"{self.updated} replaced a stored path, from {len(self.files)} file(s) "
            f"in {self.seconds:.1f} s"
        )


# -- the two passes ------------------------------------------------------------------------------


def read_files(
    files: Sequence[str], directory: str, manifest_file: str | None = None
) -> list[Source]:
    """Open and check every row of `files` for an import into `directory` (created by nothing
    here). Raises ImportFormatError (file, row, rule) or IndexIncompatible.

    A parquet file without a manifest (another tool rewrote it) takes the one in
    `manifest_file` or, without it, the existing index's (its `notice` then says so)."""
    if not files:
        raise UsageError("give at least one file to import")
    directory = os.path.abspath(directory)
    existing = _existing_manifest(directory)
    if manifest_file is not None:
        fallback: Fallback | None = read_manifest_file(manifest_file)
    elif existing is not None:
        fallback = Fallback(existing, f"the index at {directory}", False)
    else:
        fallback = None
    sources = [open_source(f, fallback) for f in files]
    reference = existing or sources[0].manifest
    for source in sources:
        check_source(reference, source, directory)
    for source in sources:
        for _ in source.batches(IMPORT_BATCH):
            pass
    return sources


def import_files(
    index_dir: IndexDir,
    sources: Sequence[Source],
    configure: Callable[[Manifest, bool], Manifest] = lambda manifest, new: manifest,
    batch: int | None = None,
) -> ImportReport:
    """Store the rows of `sources` (from `read_files`) in an index open for writing.

    A new index takes the first file's manifest through `configure(manifest, True)` (index
    type, dtype); an existing one goes through `configure(manifest, False)`. One transaction
    per `batch` rows (default IMPORT_BATCH). A new index is removed again if this fails.
    """
    started = min((s.opened for s in sources), default=time.monotonic())  # the checks count
    current = index_dir.manifest
    new = current is None
    reference = sources[0].manifest if current is None else current
    counts = [0, 0]  # added, updated
    try:
        for source in sources:
            source.check_unchanged()
            check_source(reference, source, index_dir.directory)  # another may have made it
        manifest = configure(reference, new)
        if new or manifest != current:
            index_dir.set_manifest(manifest)
        for rows in _rebatched(sources, batch or IMPORT_BATCH):
            added, updated = index_dir.catalog.store_many(rows)
            counts[0], counts[1] = counts[0] + added, counts[1] + updated
    except BaseException as exc:
        if new:
            _remove_new_index(index_dir)
        raise _failed(exc, new, sum(counts), index_dir.directory) from None
    index_dir.sync_vectors()
    return ImportReport(
        counts[0],
        counts[1],
        reference.dim,
        tuple(s.path for s in sources),
        time.monotonic() - started,
    )


def _rebatched(sources: Sequence[Source], size: int) -> Iterator[list[NewRow]]:
    """The rows of every source in lists of `size` (one file's tail shares with the next)."""
    pending: list[NewRow] = []
    for source in sources:
        for rows in source.batches(size):
            pending.extend(rows)
            while len(pending) >= size:
                yield pending[:size]
                pending = pending[size:]
    if pending:
        yield pending


def _failed(exc: BaseException, new: bool, kept: int, directory: str) -> BaseException:
    """The error to raise for `exc` in the writing pass, saying what was kept."""
    if new:
        outcome = f"nothing was imported (the new index at {directory} was removed)"
        again = "run the same command again"
    else:
        outcome = f"kept {kept} imported embeddings from finished transactions"
        again = "importing the same files again replaces them"
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(f"interrupted: {outcome}; {again}")
    if isinstance(exc, ImportFormatError) and "changed after" not in str(exc):
        # Checked in the first pass: the file was rewritten while it was being imported.
        problem = str(exc).replace(f"; {checks.NOTHING}", "")
        return ImportFormatError(f"{problem}: the file changed while it was imported; {outcome}")
    if isinstance(exc, StorageError) and new:
        return StorageError(f"{exc}; {outcome}")
    return exc


def _remove_new_index(index_dir: IndexDir) -> None:
    """Delete what a failed import created in a new index directory (the writer lock stays:
    removing a held lock file would let a waiting writer and a new one both in)."""
    index_dir.catalog.close()
    for name in (defaults.CATALOG_FILE, defaults.MANIFEST_FILE, defaults.VECTORS_FILE):
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):  # the error being raised matters more
                os.unlink(os.path.join(index_dir.directory, name + suffix))
    remove_stale_temps(index_dir.directory)


def _existing_manifest(directory: str) -> Manifest | None:
    """The manifest of the index at `directory`, or None where there is none yet."""
    if not os.path.isfile(os.path.join(directory, defaults.CATALOG_FILE)):
        return None
    try:
        with IndexDir.open(directory) as index_dir:
            return index_dir.manifest
    except IndexNotFound:
        return None


def check_source(manifest: Manifest, source: Source, directory: str) -> None:
    """Refuse a file whose vectors come from another model, weights or dimension."""
    mine, theirs = manifest.model, source.manifest.model
    same = (
        mine.name == theirs.name
        and mine.dim == theirs.dim
        and mine.weights.source == theirs.weights.source
        and mine.weights.identity == theirs.weights.identity
    )
    if not same:
        raise IndexIncompatible(
            f"{source.path} holds {theirs.dim}-d vectors from {theirs.name} "
            f"({theirs.weights.describe()}), but the index at {directory} holds {mine.dim}-d "
            f"vectors from {mine.name} ({mine.weights.describe()}); import it into a new "
            f"index instead: `retrieval import {source.path} --index NEW_DIR`"
        )
