"""Moving one user file without following links and without overwriting anything.

`move_file` is used both ways (apply and undo). Within one file system it is `os.rename`
after checking that nothing is at the destination; across file systems (EXDEV) it copies to
a temporary name beside the destination, fsyncs, checks the copy's size and content hash,
gives it the source's mtime, links it into place (`os.link` refuses an existing name), and
only then unlinks the source. The source must still be the file that was planned (lstat:
a regular file with the same device, inode, size and mtime), never a symlink.

Limit: between the destination check and `os.rename` another process could create the
destination, which rename would replace (Python has no RENAME_NOREPLACE). The destination
is a folder the user chose for this move, outside every indexed root.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import time

from ..pathnames import display
from ..store.files import file_kind, fsync_dir

#: Bytes read per step when copying across file systems.
COPY_CHUNK = 1 << 20


class MoveRefused(Exception):
    """This one file was not moved; the message is the per-file reason."""


def same_file(found: os.stat_result, size: int, mtime_ns: int, ino: tuple[int, int] | None) -> bool:
    """Whether lstat result `found` is a regular file with this size, mtime and, when given,
    (device, inode)."""
    if not stat.S_ISREG(found.st_mode):
        return False
    if (found.st_size, found.st_mtime_ns) != (size, mtime_ns):
        return False
    return ino is None or (found.st_dev, found.st_ino) == ino


def lstat_or_none(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def describe_change(found: os.stat_result | None, what: str) -> str:
    """Why lstat result `found` is not the expected file, for a per-file reason."""
    if found is None:
        return f"the {what} no longer exists"
    kind = file_kind(found.st_mode)
    if kind != "file":
        return f"the {what} is {kind} now, not a regular file"
    return f"the {what} changed (size, mtime or inode differ from what was recorded)"


def make_parents(base: bytes, destination: bytes) -> None:
    """Create the folders between `base` (an existing real folder) and `destination`,
    refusing any that is a symlink or not a folder (MoveRefused): a link planted in the
    move-to folder must not send a file elsewhere."""
    parent = os.path.dirname(destination)
    relative = os.path.relpath(parent, base)
    current = base
    for part in [] if relative == b"." else relative.split(b"/"):
        current = os.path.join(current, part)
        with contextlib.suppress(FileExistsError):
            os.mkdir(current)
        found = os.lstat(current)
        if not stat.S_ISDIR(found.st_mode):
            kind = file_kind(found.st_mode)
            raise MoveRefused(f"{display(current)} is {kind}, not a folder; nothing was moved")


def move_file(
    source: bytes,
    destination: bytes,
    *,
    size: int,
    mtime_ns: int,
    ino: tuple[int, int] | None,
    content_hash: bytes,
    base: bytes | None,
) -> os.stat_result:
    """Move `source` to `destination` (missing folders created under `base`, else its folder
    must exist); returns the lstat of
    the file at its destination. Raises MoveRefused with the reason when it did not move
    (then the source is where it was and nothing new is at the destination)."""
    found = lstat_or_none(source)
    if found is None or not same_file(found, size, mtime_ns, ino):
        raise MoveRefused(describe_change(found, "file"))
    if base is not None:
        make_parents(base, destination)
    elif not os.path.isdir(os.path.dirname(destination)):
        folder = display(os.path.dirname(destination))
        raise MoveRefused(f"its folder {folder} no longer exists; create it and run again")
    if os.path.lexists(destination):
        raise MoveRefused(f"{display(destination)} already exists; nothing is ever overwritten")
    try:
        os.rename(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise MoveRefused(f"could not move it: {exc.strerror or exc}") from None
        _copy_across(source, destination, size, mtime_ns, content_hash)
    for folder in (os.path.dirname(destination), os.path.dirname(source)):
        with contextlib.suppress(OSError):  # moved either way; only durability is at stake
            fsync_dir(folder)
    return os.lstat(destination)


def _copy_across(
    source: bytes, destination: bytes, size: int, mtime_ns: int, content_hash: bytes
) -> None:
    """Copy, fsync, verify (size and BLAKE2b-128, as `sources.decode.hash_bytes` stores),
    link into place, unlink the source. Raises MoveRefused; leaves no temporary file."""
    folder, name = os.path.split(destination)
    temp = os.path.join(folder, b".%s.retrieval-move-%d" % (name, time.monotonic_ns()))
    try:
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise MoveRefused(f"could not open it: {exc.strerror or exc}") from None
    try:
        digest = _copy_to(src, temp, mtime_ns)
        if digest != content_hash:
            raise MoveRefused("its bytes differ from the indexed ones (the copy was removed)")
        try:
            os.link(temp, destination)  # fails with EEXIST: never overwrites
        except FileExistsError:
            raise MoveRefused(
                f"{display(destination)} already exists; nothing is ever overwritten"
            ) from None
        except OSError as exc:
            raise MoveRefused(f"could not place the copy: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    finally:
        os.close(src)
    os.unlink(temp)
    if os.lstat(destination).st_size != size:  # pragma: no cover - checked by the hash
        raise MoveRefused("the copy has the wrong size")
    os.unlink(source)


def _copy_to(src: int, temp: bytes, mtime_ns: int) -> bytes:
    """Copy descriptor `src` into a new file `temp` (fsynced, mtime set); returns the digest."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        out = os.open(temp, flags, 0o644)
    except OSError as exc:
        raise MoveRefused(f"could not copy it: {exc.strerror or exc}") from None
    hasher = hashlib.blake2b(digest_size=16)
    try:
        while chunk := os.read(src, COPY_CHUNK):
            hasher.update(chunk)
            os.write(out, chunk)
        mode = stat.S_IMODE(os.fstat(src).st_mode)
        os.fchmod(out, mode)
        os.utime(out, ns=(time.time_ns(), mtime_ns))
        os.fsync(out)
    except OSError as exc:
        raise MoveRefused(f"could not copy it: {exc.strerror or exc}") from None
    finally:
        os.close(out)
    return hasher.digest()
