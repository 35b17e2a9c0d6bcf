"""Crash-safe file primitives: atomic replacement and the writer lock.

An atomic write goes to a temporary file in the destination's directory, is fsynced, renamed
over the destination and the directory is fsynced: a reader sees the old file or the new
one, never half of either.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from typing import BinaryIO

from ..errors import IndexBusy, ReadOnlyIndex, StorageError, UnsafeIndexFile

TEMP_MARK = ".tmp-"


class FaultPoints:
    """Named places where the crash tests stop a process, and how often each was reached.

    The counts live in this object, not in a module global; the process has one,
    `FAULT_POINTS`, because RETRIEVAL_TEST_KILL_AT="NAME:N" counts reaches across the whole
    run. `environ` (default: `os.environ`, read on every reach, so a test may set it late)
    holds the variables described in `fault_point`.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._reached: dict[str, int] = {}

    def reached(self, name: str) -> int:
        """How many times point `name` was reached while a kill or pause was asked for."""
        return self._reached.get(name, 0)

    def reach(self, name: str) -> None:
        """Count point `name` and kill or pause here if the variables ask for this reach."""
        kill = self._environ.get("RETRIEVAL_TEST_KILL_AT")
        pause = self._environ.get("RETRIEVAL_TEST_PAUSE_AT")
        if not kill and not pause:
            return
        count = self._reached[name] = self._reached.get(name, 0) + 1
        here = f"{name}:{count}"
        if here == kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if here == pause:
            self._pause(self._environ["RETRIEVAL_TEST_PAUSE_FILE"])

    @staticmethod
    def _pause(flag: str) -> None:
        """Create `flag` (holding this pid) and sleep until a test deletes it, 60 s at most."""
        with open(flag, "w") as fh:
            fh.write(str(os.getpid()))
        deadline = time.monotonic() + 60
        while os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.01)


#: This process's test points (see `FaultPoints` for why there is one).
FAULT_POINTS = FaultPoints()


def fault_point(name: str) -> None:
    """A place where the crash tests stop this process; a no-op unless the variables are set.

    RETRIEVAL_TEST_KILL_AT="NAME:N" sends SIGKILL to this process the Nth time point NAME is
    reached (a hard crash: no cleanup, no finally). RETRIEVAL_TEST_PAUSE_AT="NAME:N" instead
    creates the file $RETRIEVAL_TEST_PAUSE_FILE there and sleeps until a test deletes it (or
    60 s pass), so a test can signal the process or read the index at that moment.

    Points: "scanned" (after the scan), "batch-embedded" / "batch-committed" (before / after
    each batch's transaction), "txn-open" (inside every catalogue write transaction, before
    COMMIT), and for each atomic write "write-temp/FILE" (temp file written, not synced),
    "write-synced/FILE" (synced, not renamed), "write-renamed/FILE" (renamed, directory not
    synced), FILE being the destination's name (vectors.faiss, manifest.json), and in a Ray
    embedding actor "actor-embed" (each call, counted per actor process).
    """
    FAULT_POINTS.reach(name)


def temp_name(path: str) -> str:
    """A temporary sibling of `path`, recognisable by `is_temp`."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}{TEMP_MARK}{os.getpid()}-{time.monotonic_ns()}")


def is_temp(name: str) -> bool:
    return name.startswith(".") and TEMP_MARK in name


def remove_stale_temps(folder: str) -> list[str]:
    """Delete temporary files a killed writer left in `folder`; returns their names.

    Only call while holding the writer lock: then no live writer owns any of them.
    """
    removed = []
    for name in os.listdir(folder):
        if is_temp(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
                removed.append(name)
    return removed


def atomic_write(path: str, write: Callable[[BinaryIO], None], what: str) -> None:
    """Write `path` atomically by calling `write(fh)` on a temporary file.

    Raises StorageError naming `what` if any step fails; `path` is then untouched.
    """
    tmp = temp_name(path)
    try:
        point = os.path.basename(path)
        with open(tmp, "wb", opener=_create_new) as fh:
            write(fh)
            fh.flush()
            fault_point(f"write-temp/{point}")
            os.fsync(fh.fileno())
        fault_point(f"write-synced/{point}")
        os.replace(tmp, path)
        fault_point(f"write-renamed/{point}")
        fsync_dir(os.path.dirname(path) or ".")
    except FileExistsError:
        raise StorageError(f"could not write {what} {path}: {tmp} already exists") from None
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StorageError(f"could not write {what} {path}: {describe_os_error(exc)}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _create_new(path: str, flags: int) -> int:
    """`open` opener: a new file, never an existing name (a link planted at a temporary
    name is refused with EEXIST, not followed)."""
    flags |= os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(path, flags & ~os.O_TRUNC, 0o644)


def open_regular(path: str) -> BinaryIO:
    """Open `path` for reading only if it is a regular file itself (not a link, FIFO, device
    or folder); raises FileNotFoundError, or OSError(EINVAL) naming what it is instead.

    O_NONBLOCK: opening a FIFO planted in the index folder must not wait for a writer."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.EINVAL, "a symlink, not a regular file") from None
        raise
    kind = file_kind(os.fstat(fd).st_mode)
    if kind != "file":
        os.close(fd)
        raise OSError(errno.EINVAL, f"{kind}, not a regular file")
    return os.fdopen(fd, "rb")


def file_kind(mode: int) -> str:
    """'file', or what a non-regular file is, for messages: 'a directory', 'a FIFO', ..."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def read_only_media(directory: str) -> bool:
    """Whether the file system holding `directory` is mounted read-only."""
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def describe_os_error(exc: OSError) -> str:
    """A short reason plus what to do, for the common write failures."""
    if exc.errno == errno.ENOSPC:
        return "no space left on the device; free some space and run again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied or read-only file system; choose a writable --index"
    if exc.errno == errno.EIO:
        return "I/O error from the device; check the disk and run again"
    return exc.strerror or str(exc)


class WriterLock:
    """An exclusive, advisory lock on `folder/name`; released by the OS if the process dies."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, wait: bool = False) -> None:
        """Take the lock; if another process holds it, wait (wait=True) or raise IndexBusy.

        Raises UnsafeIndexFile when the lock is not a plain file of its own (a symlink, hard
        link, folder, FIFO...): anyone who can write into the index folder could otherwise
        make this process truncate any file it may write. ReadOnlyIndex when it cannot be
        created for lack of permission or a read-only file system."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise IndexBusy(os.path.dirname(self.path), holder) from None
        try:
            # Through our own descriptor of a file checked to be a plain, single-named one.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        except OSError:
            pass  # the holder's name is a courtesy to the next process; the flock is the lock
        self._fd = fd

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeIndexFile(self.path, "a symlink", "a lock file") from None
            if exc.errno in (errno.EISDIR, errno.ENXIO):
                kind = file_kind(os.lstat(self.path).st_mode)
                raise UnsafeIndexFile(self.path, kind, "a lock file") from None
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise ReadOnlyIndex(os.path.dirname(self.path)) from None
            raise
        info = os.fstat(fd)
        kind = file_kind(info.st_mode)
        if kind == "file" and info.st_nlink > 1:
            kind = "a hard link to another file"
        if kind != "file":
            os.close(fd)
            raise UnsafeIndexFile(self.path, kind, "a lock file")
        return fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @contextlib.contextmanager
    def held(self, wait: bool = False) -> Iterator[None]:
        self.acquire(wait)
        try:
            yield
        finally:
            self.release()


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown pid"
    except OSError:
        return "unknown pid"
