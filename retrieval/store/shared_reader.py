"""One `IndexDir` opened for reading and shared by the threads of a long-running process
(`retrieval serve`), instead of opening the catalogue and reading vectors.faiss per call.

Each search already sees one catalogue snapshot: the loaded vectors.faiss plus the rows
changed since it was written (`searcher`), so a held reader stays correct while a writer
commits. It is opened again when the files a writer replaces at the end of a run change
(vectors.faiss, manifest.json, the catalogue file itself), so the changed rows do not pile
up; the old one is closed when its last borrower is done.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from .. import defaults
from .index_dir import IndexDir

#: The files whose replacement makes a fresh open worthwhile.
WATCHED = (defaults.VECTORS_FILE, defaults.MANIFEST_FILE, defaults.CATALOG_FILE)


def _stamp(directory: str) -> tuple[tuple[int, int, int], ...]:
    """(inode, size, mtime ns) of each watched file; zeros for one that is missing."""
    out = []
    for name in WATCHED:
        try:
            st = os.stat(os.path.join(directory, name))
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((0, 0, 0))
    return tuple(out)


class SharedReader:
    """`borrow()` lends the current reader (a context manager, from any thread)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._opened: IndexDir | None = None
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self._users: dict[int, int] = {}

    @contextlib.contextmanager
    def borrow(self) -> Iterator[IndexDir]:
        """The shared IndexDir, opened again first when a watched file changed; raises
        what `IndexDir.open` raises."""
        with self._lock:
            stamp = _stamp(self.directory)
            if self._opened is None or stamp != self._stamp:
                fresh = IndexDir.open(self.directory)
                self._retire(self._opened)
                self._opened, self._stamp = fresh, stamp
            opened = self._opened
            self._users[id(opened)] = self._users.get(id(opened), 0) + 1
        try:
            yield opened
        finally:
            with self._lock:
                self._users[id(opened)] -= 1
                if opened is not self._opened:
                    self._close_if_unused(opened)

    def close(self) -> None:
        with self._lock:
            self._retire(self._opened)
            self._opened = self._stamp = None

    def _retire(self, old: IndexDir | None) -> None:
        if old is not None:
            self._users.setdefault(id(old), 0)
            self._close_if_unused(old)

    def _close_if_unused(self, old: IndexDir) -> None:
        if self._users.get(id(old), 0) == 0:
            self._users.pop(id(old), None)
            old.close()
