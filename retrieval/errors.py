"""The one exception hierarchy of `retrieval`.

Every error a user can cause is a `RetrievalError`; its message says what went wrong and what
to do instead. Where the remedy is an option, a message names both spellings, the command
line's and the library's: "--no-pretrained, in Python: weights=WeightsSpec('untrained')".
The CLI prints `error: <message>` and exits 1; nothing else reaches the user.

    RetrievalError
    +-- UsageError               a bad argument or option value
    +-- IndexNotFound            no index at the given directory
    +-- NotFound                 no indexed image has the given id
    +-- IndexBusy                another process is writing to the index
    +-- IndexIncompatible        model / weights / dim differ from the index's manifest
    +-- CatalogCorrupt           the SQLite catalogue cannot be read
    +-- CatalogTampered          the catalogue holds triggers or views retrieval did not create
    +-- StorageError             a write to disk failed (disk full, I/O error, read-only)
    |   +-- ReadOnlyIndex        the index is on read-only media (or not writable)
    +-- UnsafeIndexFile          a file in the index folder is a link, FIFO, ... (tampering)
    +-- ModelError               the backbone cannot be created
    |   +-- WeightsUnavailable   pretrained weights are neither cached nor downloadable
    |   +-- WeightsMismatch      weights do not fit the architecture, or changed since indexing
    +-- BadImage                 an image file cannot be decoded (a per-file failure)
    +-- QueryImageError          a query image cannot be read or decoded
    +-- ImportFormatError        an embeddings file to import is not in the expected form
    +-- WorkersUnavailable       the decode worker processes cannot be started
    +-- EngineFailed             the Ray cluster failed (loading the model, or mid-run: committed
    |                            batches were kept)
    +-- Interrupted              the user pressed Ctrl-C; finished work was kept

Every error pickles with its message and attributes (a Ray actor's model error reaches the
driver that way), whatever its constructor takes.
"""

from __future__ import annotations

import os


class RetrievalError(Exception):
    """Base class: anything the user can fix."""

    def __reduce__(self) -> tuple[object, ...]:
        # Exception's own pickling calls `cls(*args)`, which fails for the subclasses whose
        # constructors take other arguments than the message (WeightsUnavailable, ...)
        return _rebuilt, (type(self), self.args, self.__dict__)


def _rebuilt(
    cls: type[RetrievalError], args: tuple[object, ...], state: dict[str, object]
) -> RetrievalError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class UsageError(RetrievalError):
    """A bad argument or option value."""


class IndexNotFound(RetrievalError):
    """No index exists at the given directory (`searched_from`: the folder the default
    location was looked for from, when the user named no index)."""

    def __init__(self, directory: str | os.PathLike[str], searched_from: str | None = None) -> None:
        self.directory = os.fspath(directory)
        self.searched_from = searched_from
        if searched_from is None:
            message = (
                f"no index at {self.directory}: build one with "
                f"`retrieval index --index {self.directory} FOLDER`"
            )
        else:
            message = (
                f"no index found: no indexes/default in {searched_from} or a folder above "
                f"it, and none at the per-user default {self.directory}; build one with "
                "`retrieval index FOLDER` (from your project folder, or anywhere for the "
                "per-user one), or name it with --index DIR or $RETRIEVAL_INDEX"
            )
        super().__init__(message)


class NotFound(RetrievalError):
    """No searchable image in the index has this id (`what` says which kind of id)."""

    def __init__(self, image_id: object, what: str = "indexed image") -> None:
        self.image_id = image_id
        super().__init__(
            f"no {what} has id {image_id!r}; ids are the `id` of search results "
            "(`retrieval search --json`)"
        )


class IndexBusy(RetrievalError):
    """Another process holds the index's writer lock."""

    def __init__(self, directory: str, holder: str) -> None:
        self.directory = directory
        self.holder = holder
        super().__init__(
            f"another retrieval process ({holder}) is writing to {directory}; "
            "wait for it to finish, or pass --wait to queue behind it"
        )


class IndexIncompatible(RetrievalError):
    """The request does not match how the index was built."""


class CatalogCorrupt(RetrievalError):
    """The SQLite catalogue is damaged or not a database."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        directory = os.path.dirname(path)
        super().__init__(
            f"the catalogue {path} is damaged ({reason}); restore it from a backup, or move "
            f"the index away and rebuild it: `retrieval index --index {directory} FOLDER...`"
        )


class CatalogTampered(RetrievalError):
    """The catalogue holds a schema object (trigger, view) that retrieval did not create."""

    def __init__(self, path: str, kind: str, name: str) -> None:
        self.path = path
        self.kind = kind
        self.name = name
        directory = os.path.dirname(path)
        super().__init__(
            f"the catalogue {path} holds a {kind} {name!r} that retrieval did not create; run "
            f"`retrieval check --repair --index {directory}` to remove it"
        )


class StorageError(RetrievalError):
    """Writing to disk failed; the previous state of the index is intact."""


class CopiedIndex(StorageError):
    """A copied index folder would share its original's Milvus collection (see
    store.milvus_owner): refused, reading or writing."""


class ReadOnlyIndex(StorageError):
    """The index cannot be changed: its folder is on read-only media or not writable."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        super().__init__(
            f"the index at {directory} is on read-only media (or not writable); copy it to "
            "writable storage to change it"
        )


class UnsafeIndexFile(RetrievalError):
    """A file in the index folder is not what retrieval writes there (a symlink, a folder, a
    FIFO...): following it could overwrite some other file, so it is refused."""

    def __init__(self, path: str, kind: str, expected: str) -> None:
        self.path = path
        self.kind = kind
        super().__init__(f"remove {path}: it is {kind}, not {expected}")


class ModelError(RetrievalError):
    """The backbone could not be created."""


class WeightsUnavailable(ModelError):
    """Pretrained weights are not cached and cannot be downloaded."""

    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = reason
        super().__init__(
            f"pretrained weights for {model} are not in the Hugging Face cache and could not "
            f"be downloaded ({reason}); connect to the network once to cache them, use a "
            "local weights file (--weights FILE, in Python: weights=WeightsSpec('file', FILE)), "
            "or build an untrained backbone (--no-pretrained, in Python: "
            "weights=WeightsSpec('untrained'))"
        )


class WeightsMismatch(ModelError):
    """Weights do not fit the chosen architecture, or are not the ones the index was built
    with (their SHA-256 differs from the manifest's)."""


class QueryImageError(RetrievalError):
    """A query image could not be read."""


class ImportFormatError(RetrievalError):
    """A file given to import is not an embeddings export."""


class WorkersUnavailable(RetrievalError):
    """The decode worker processes could not be started."""

    def __init__(self, message: str, workers: int) -> None:
        self.workers = workers
        super().__init__(message)


class EngineFailed(RetrievalError):
    """The engine that decodes and embeds beyond this process (a Ray cluster) failed during
    a run; the batches committed before it are kept."""


class Interrupted(RetrievalError):
    """The user interrupted a run; every finished batch was kept."""

    def __init__(self, message: str, report: object | None = None) -> None:
        self.report = report
        super().__init__(message)


class BadImage(RetrievalError):
    """An image file cannot be turned into pixels (recorded as a per-file failure)."""
