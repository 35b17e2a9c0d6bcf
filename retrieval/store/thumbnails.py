"""The thumbnail cache: JPEG pictures of indexed images, kept inside the index directory.

    DIR/thumbnails/ab/abcdef...-s256.jpg   one entry: content hash (hex), kind, size
    DIR/thumbnails/usage                   bytes held by entries (an estimate, see below)
    DIR/thumbnails/cache.lock              taken while `usage` is updated or entries evicted

An entry is named by the content hash of the bytes it was made from, its kind ("s": a square
thumbnail, "p": a preview) and its size in pixels, so a changed file gets a new entry and an
unchanged one is never made twice. Entries are linked into place whole (no lock, see `put`), so
a reader sees a whole JPEG or none; two processes making the same entry write the same bytes.

The cache is bounded in bytes: `usage` counts what writers added (under the lock); when it
passes the bound, every entry is listed and the least recently used are deleted until the
cache holds 90% of the bound, and `usage` is reset to what is really there (so a count that
drifted, say after a crash, is corrected). A hit moves the entry's mtime forward (at most
once a minute): mtime is the "last used" time eviction goes by.

Only this module knows the layout; `check` asks it (`inspect`, `stale_temps`, `drop`).
Nothing here decodes images: the caller gives the JPEG bytes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .. import defaults
from ..errors import StorageError, UnsafeIndexFile
from .files import WriterLock, file_kind, is_temp, open_regular, temp_name

#: Kinds of entry: a centre-square thumbnail, an aspect-kept preview.
KINDS = ("s", "p")
USAGE_FILE = "usage"
LOCK_FILE = "cache.lock"
#: After an eviction the cache holds at most this fraction of its bound.
LOW_WATER = 0.9
#: A hit refreshes the entry's "last used" mtime only when it is older than this (seconds).
TOUCH_AFTER_S = 60.0
#: A temporary file older than this (seconds) belongs to no live writer: eviction deletes it.
STALE_TEMP_S = 3600.0

_ENTRY = re.compile(r"^([0-9a-f]{32,128})-([sp])([0-9]{1,5})\.jpg$")
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"


def entry_key(content_hash: bytes, kind: str, size: int) -> str:
    """The entry name of a picture of kind `kind` ('s' or 'p'), `size` pixels, made from
    bytes whose content hash is `content_hash`."""
    assert kind in KINDS and 0 < size < 100_000
    return f"{content_hash.hex()}-{kind}{size}.jpg"


@dataclass(frozen=True)
class CacheUsage:
    """What the cache holds: `entries` JPEGs of `bytes` bytes in all, and the names (relative
    to the cache folder) of `damaged` entries (not a whole JPEG) and `temps` (temporary files
    a killed writer left)."""

    entries: int
    bytes: int
    damaged: tuple[str, ...]
    temps: tuple[str, ...]


class ThumbnailCache:
    """The cache folder of one index. `writable` False (read-only media): `get` reads, `put`
    stores nothing. `max_bytes` bounds the entries' total size."""

    def __init__(
        self,
        index_directory: str,
        *,
        writable: bool = True,
        max_bytes: int = defaults.THUMBNAIL_CACHE_BYTES,
    ) -> None:
        self.folder = os.path.join(index_directory, defaults.THUMBNAIL_DIR)
        self.writable = writable
        self.max_bytes = max_bytes

    def path(self, key: str) -> str:
        return os.path.join(self.folder, key[:2], key)

    # -- reading and writing ------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The entry's JPEG bytes, or None when it is not cached (or not a whole JPEG)."""
        path = self.path(key)
        if os.path.islink(self.folder):  # planted: never read through it
            return None
        try:
            with open_regular(path) as fh:
                data = fh.read()
                used = os.fstat(fh.fileno()).st_mtime
        except OSError:  # missing, or planted as a link/FIFO: a miss (put replaces it)
            return None
        if not _whole_jpeg(data):
            return None
        if self.writable and time.time() - used > TOUCH_AFTER_S:
            with contextlib.suppress(OSError):
                os.utime(path)
        return data

    def put(self, key: str, data: bytes) -> bool:
        """Store an entry; evict the least recently used past the bound. Returns whether it
        was stored: never on read-only media, nor when the disk refuses (a cache must not
        fail the request that fills it).

        The bytes go to a temporary file outside any lock; under the cache lock the entry is
        only linked into place (a link never replaces: of the threads and processes making
        it at once exactly one places it) and its bytes added to `usage`, so the lock is
        held for a few file-system calls. Nothing is fsynced: after a crash an entry is
        whole, missing or damaged, and a damaged one is a miss that is made again."""
        if not self.writable:
            return False
        path = self.path(key)
        try:
            _real_folder(self.folder)
            _real_folder(os.path.dirname(path))
            tmp = temp_name(path)
            with open(tmp, "wb", opener=_new_file) as fh:
                fh.write(data)
            try:
                with WriterLock(os.path.join(self.folder, LOCK_FILE)).held(wait=True):
                    held = self._usage()  # before placing: a recount must not see the entry
                    added = _place(tmp, path, len(data), self.get)
                    if added:
                        self._account(held + added)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        except (StorageError, UnsafeIndexFile, OSError):
            return False
        return True

    def _account(self, total: int) -> None:
        """Record `total` bytes in `usage`, evicting first when it passes the bound (holding
        the lock). Not fsynced: a damaged `usage` is recounted."""
        if total > self.max_bytes:
            total = self._evict(int(self.max_bytes * LOW_WATER))
        usage = os.path.join(self.folder, USAGE_FILE)
        tmp = temp_name(usage)
        with open(tmp, "wb", opener=_new_file) as fh:
            fh.write(str(total).encode("ascii"))
        os.replace(tmp, usage)

    def _usage(self) -> int:
        try:
            with open_regular(os.path.join(self.folder, USAGE_FILE)) as fh:
                return max(0, int(fh.read(32).decode("ascii").strip()))
        except (OSError, ValueError, UnicodeDecodeError):
            return self.inspect().bytes  # missing or damaged: count what is there

    def _evict(self, target: int) -> int:
        """Delete entries, least recently used first, until at most `target` bytes remain;
        also stale temporary files. Returns the bytes left."""
        entries = sorted(self._entries(), key=lambda e: e[0])  # (mtime, size, path)
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= target:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                total -= size
        now = time.time()
        for name in self._listing()[2]:
            path = os.path.join(self.folder, name)
            with contextlib.suppress(OSError):
                if now - os.lstat(path).st_mtime > STALE_TEMP_S:
                    os.unlink(path)
        return total

    # -- looking at the whole cache (eviction, check) ----------------------------------------

    def _entries(self) -> list[tuple[float, int, str]]:
        """(mtime, bytes, path) of every entry file."""
        out = []
        for name in self._listing()[0]:
            path = os.path.join(self.folder, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                out.append((st.st_mtime, st.st_size, path))
        return out

    def _listing(self) -> tuple[list[str], list[str], list[str]]:
        """(entries, other files, temporary files), as names relative to the folder; what
        is not a regular file (a planted link) counts as "other"."""
        entries: list[str] = []
        other: list[str] = []
        temps: list[str] = []
        try:
            subfolders = sorted(os.scandir(self.folder), key=lambda e: e.name)
        except OSError:
            return entries, other, temps
        for sub in subfolders:
            if not sub.is_dir(follow_symlinks=False):
                if sub.name not in (USAGE_FILE, LOCK_FILE):
                    (temps if is_temp(sub.name) else other).append(sub.name)
                continue
            with contextlib.suppress(OSError):
                for item in sorted(os.scandir(sub.path), key=lambda e: e.name):
                    name = f"{sub.name}/{item.name}"
                    if is_temp(item.name):
                        temps.append(name)
                    elif item.is_file(follow_symlinks=False) and _ENTRY.match(item.name):
                        entries.append(name)
                    else:
                        other.append(name)
        return entries, other, temps

    def inspect(self, verify: bool = False) -> CacheUsage:
        """Count the entries and their bytes; with `verify`, read each one and name those
        that are not a whole JPEG (damaged), plus files that are no entry at all."""
        entries, other, temps = self._listing()
        total = 0
        damaged = list(other)
        for name in entries:
            path = os.path.join(self.folder, name)
            try:
                total += os.lstat(path).st_size
                if verify:
                    with open_regular(path) as fh:
                        if not _whole_jpeg(fh.read()):
                            damaged.append(name)
            except OSError:
                damaged.append(name)
        return CacheUsage(len(entries), total, tuple(sorted(damaged)), tuple(temps))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cache lock (no entry is being written meanwhile), where there is a cache
        folder to hold it in and the media is writable; else nothing to hold."""
        if not (self.writable and os.path.isdir(self.folder) and not os.path.islink(self.folder)):
            yield
            return
        with WriterLock(os.path.join(self.folder, LOCK_FILE)).held(wait=True):
            yield

    def exists(self) -> bool:
        return os.path.lexists(self.folder)

    def folder_problem(self) -> str | None:
        """Why the cache folder cannot be used ("a symlink", "a file"...), or None."""
        try:
            mode = os.lstat(self.folder).st_mode
        except FileNotFoundError:
            return None
        kind = file_kind(mode)
        return None if stat.S_ISDIR(mode) else f"is {kind.replace('file', 'a file')}, not a folder"

    def remove(self, names: list[str]) -> None:
        """Delete these files (names from `inspect`); raises StorageError."""
        for name in names:
            path = os.path.join(self.folder, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StorageError(f"cannot delete {path}: {exc.strerror or exc}") from None
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.folder, USAGE_FILE))  # recounted on next write

    def drop(self) -> None:
        """Delete the whole cache folder (it is remade on demand); raises StorageError."""
        try:
            if os.path.islink(self.folder):
                os.unlink(self.folder)
            elif os.path.isdir(self.folder):
                shutil.rmtree(self.folder)
            elif os.path.lexists(self.folder):
                os.unlink(self.folder)
        except OSError as exc:
            raise StorageError(f"cannot delete {self.folder}: {exc.strerror or exc}") from None


def _new_file(path: str, flags: int) -> int:
    """`open` opener: a new file, never an existing name (a link planted at a temporary
    name is refused, not followed)."""
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def _place(tmp: str, path: str, size: int, get: Callable[[str], bytes | None]) -> int:
    """Link the written temporary file `tmp` (`size` bytes) to `path` unless a whole entry
    is there already; returns the bytes this added to the cache (0 when another writer
    placed it first). A damaged entry there is replaced. Raises OSError."""
    try:
        os.link(tmp, path)  # never replaces
        return size
    except FileExistsError:
        if get(os.path.basename(path)) is not None:
            return 0  # made meanwhile by another thread or process
        old = os.lstat(path).st_size
        os.replace(tmp, path)  # damaged: replace it
        return size - old


def _whole_jpeg(data: bytes) -> bool:
    return data.startswith(_JPEG_START) and data.rstrip(b"\0").endswith(_JPEG_END)


def _real_folder(folder: str) -> None:
    """Create `folder` if needed; raise UnsafeIndexFile when it is a link or not a folder
    (a planted link must not make the cache write elsewhere)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o755)
    mode = os.lstat(folder).st_mode
    if not stat.S_ISDIR(mode):
        raise UnsafeIndexFile(folder, "not a folder", "the thumbnail cache folder")
