"""Finding image files under the folders a user names.

Paths travel as raw bytes (see `retrieval.pathnames`), so names that are not UTF-8 survive.
The walk uses an explicit stack, so deep trees cannot overflow the recursion limit, and with
`follow_symlinks` it remembers every directory's (st_dev, st_ino), so symlink loops end;
without it, symbolic links inside the folders are ignored. Only regular files are listed:
FIFOs, sockets and devices are skipped (reading a FIFO would block, /dev/zero never ends).
A file that vanishes while the walk runs is simply not listed; a folder or file that cannot
be read becomes a `ScanProblem`, and the indexer keeps what it had stored under it.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .. import defaults
from ..errors import UsageError
from ..pathnames import display, to_bytes


@dataclass(frozen=True)
class FileEntry:
    """A candidate image: absolute path (bytes), size in bytes, mtime in nanoseconds, and
    what the reader checks: the (st_dev, st_ino) the scan saw (0, 0: unknown) and whether
    the name was a symbolic link the scan took (--follow-symlinks, or a file named directly);
    only then may the reader follow a link there."""

    path: bytes
    size: int
    mtime_ns: int
    device: int = 0
    inode: int = 0
    link: bool = False

    @property
    def identity(self) -> tuple[int, int] | None:
        return (self.device, self.inode) if self.inode else None


@dataclass(frozen=True)
class ScanProblem:
    """A folder or file the walk could not read (the run goes on without it)."""

    path: bytes
    error: str


@dataclass
class ScanResult:
    """What a walk found: files sorted by path, and the places it could not read."""

    files: list[FileEntry] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)

    def unreadable_dirs(self) -> list[bytes]:
        """Folders (and single files) whose contents are unknown this run.

        The catalogue rows at and under these paths must be kept, not treated as removed.
        """
        return [p.path for p in self.problems]


def supported_extensions() -> frozenset[str]:
    """The default allow-list plus AVIF/HEIC where this Pillow can decode them."""
    from PIL import Image

    from .decode import register_optional_plugins

    register_optional_plugins()
    extra = {ext for ext, fmt in defaults.OPTIONAL_EXTENSIONS.items() if fmt in Image.OPEN}
    return defaults.EXTENSIONS | extra


def check_roots(roots: Iterable[str | os.PathLike[str]]) -> None:
    """Raise UsageError naming the first root that does not exist (before any work starts)."""
    for root in roots:
        root_b = to_bytes(root)
        if not os.path.exists(root_b):
            raise UsageError(f"{display(root_b)} does not exist; check the path")


def scan(
    roots: Iterable[str | os.PathLike[str]],
    *,
    exclude: Iterable[str] = (),
    follow_symlinks: bool = False,
    extensions: frozenset[str] | None = None,
) -> ScanResult:
    """Walk `roots` (folders or single files) and list the image files in them.

    A file named directly is taken whatever its extension (if it is a regular file); inside
    folders only names whose lower-cased extension is in `extensions` are. `exclude` holds
    glob patterns matched against each name and each path relative to its root. Raises
    UsageError if a root does not exist; anything unreadable is listed in `problems`.
    """
    allowed = supported_extensions() if extensions is None else extensions
    patterns = [os.fsencode(p) for p in exclude]
    result = ScanResult()
    seen: set[bytes] = set()
    for root in roots:
        root_b = to_bytes(root)
        try:
            st = os.stat(root_b)
        except FileNotFoundError:
            raise UsageError(f"{display(root_b)} does not exist; check the path") from None
        except OSError as exc:
            result.problems.append(ScanProblem(root_b, _reason(exc)))
            continue
        if stat.S_ISDIR(st.st_mode):
            walker = _walk(root_b, st, patterns, follow_symlinks, allowed, result.problems)
        elif stat.S_ISREG(st.st_mode):
            link = os.path.islink(root_b)
            single = FileEntry(root_b, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, link)
            walker = iter([single])
        else:
            result.problems.append(ScanProblem(root_b, NOT_REGULAR))
            continue
        for entry in walker:
            if entry.path not in seen:
                seen.add(entry.path)
                result.files.append(entry)
    result.files.sort(key=lambda e: e.path)
    return result


def _walk(
    root: bytes,
    root_stat: os.stat_result,
    patterns: list[bytes],
    follow_symlinks: bool,
    allowed: frozenset[str],
    problems: list[ScanProblem],
) -> Iterator[FileEntry]:
    visited = {(root_stat.st_dev, root_stat.st_ino)}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except FileNotFoundError:
            continue  # removed while the walk ran: its rows go as missing
        except OSError as exc:
            problems.append(ScanProblem(folder, _folder_reason(exc)))
            continue
        for entry in entries:
            path = entry.path
            if _excluded(path, root, patterns):
                continue
            try:
                if entry.is_symlink() and not follow_symlinks:
                    continue
                if entry.is_dir(follow_symlinks=True):
                    key = _dir_key(entry)
                    if key not in visited:
                        visited.add(key)
                        stack.append(path)
                    continue
                if not entry.is_file(follow_symlinks=True):
                    continue
                if os.path.splitext(entry.name)[1].decode("utf-8", "replace").lower() in allowed:
                    info = entry.stat(follow_symlinks=True)
                    yield FileEntry(
                        path,
                        info.st_size,
                        info.st_mtime_ns,
                        info.st_dev,
                        info.st_ino,
                        entry.is_symlink(),
                    )
            except FileNotFoundError:
                continue  # vanished since it was listed, or a dangling symbolic link
            except OSError as exc:  # a link loop (ELOOP), permission, I/O error
                if not _is_symlink(entry):
                    problems.append(ScanProblem(path, _reason(exc)))


def _is_symlink(entry: os.DirEntry[bytes]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _dir_key(entry: os.DirEntry[bytes]) -> tuple[int, int]:
    info = entry.stat(follow_symlinks=True)
    return (info.st_dev, info.st_ino)


def _excluded(path: bytes, root: bytes, patterns: list[bytes]) -> bool:
    if not patterns:
        return False
    relative = os.path.relpath(path, root)
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)


#: The reason given for a FIFO, socket or device named as a root.
NOT_REGULAR = "not a regular file or folder (a FIFO, socket or device); skipped"


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _folder_reason(exc: OSError) -> str:
    return (
        f"cannot list this folder ({_reason(exc)}); the images indexed under it are kept "
        "until it can be read: fix its permissions and run again"
    )
