"""Finding image files under the folders a user names.

Paths travel as raw bytes (see `retrieval.pathnames`). The walk uses an explicit stack, so deep
trees cannot overflow the recursion limit, and with `follow_symlinks` it remembers every
directory's (st_dev, st_ino), so symlink loops end.
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
    """A candidate image: absolute path (bytes), size in bytes, mtime in nanoseconds."""

    path: bytes
    size: int
    mtime_ns: int


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
        """Folders whose contents are unknown this run (their catalogue rows must be kept)."""
        return [p.path for p in self.problems]


def supported_extensions() -> frozenset[str]:
    """The default allow-list plus AVIF/HEIC where this Pillow can decode them."""
    from PIL import Image

    from .decode import register_optional_plugins

    register_optional_plugins()
    extra = {ext for ext, fmt in defaults.OPTIONAL_EXTENSIONS.items() if fmt in Image.OPEN}
    return defaults.EXTENSIONS | extra


def scan(
    roots: Iterable[str | os.PathLike[str]],
    *,
    exclude: Iterable[str] = (),
    follow_symlinks: bool = False,
    extensions: frozenset[str] | None = None,
) -> ScanResult:
    """Walk `roots` (folders or single files) and list the image files in them.

    A file named directly is taken whatever its extension; inside folders only names whose
    lower-cased extension is in `extensions` are. `exclude` holds glob patterns matched
    against each name and each path relative to its root. Raises UsageError if a root does
    not exist.
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
            walker = _walk(root_b, patterns, follow_symlinks, allowed, result.problems)
        else:
            walker = iter([FileEntry(root_b, st.st_size, st.st_mtime_ns)])
        for entry in walker:
            if entry.path not in seen:
                seen.add(entry.path)
                result.files.append(entry)
    result.files.sort(key=lambda e: e.path)
    return result


def _walk(
    root: bytes,
    patterns: list[bytes],
    follow_symlinks: bool,
    allowed: frozenset[str],
    problems: list[ScanProblem],
) -> Iterator[FileEntry]:
    visited: set[tuple[int, int]] = set()
    st = os.stat(root)
    visited.add((st.st_dev, st.st_ino))
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            problems.append(ScanProblem(folder, _reason(exc)))
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
                    yield FileEntry(path, info.st_size, info.st_mtime_ns)
            except OSError as exc:  # broken link, vanished, permission
                if not entry.is_symlink():
                    problems.append(ScanProblem(path, _reason(exc)))


def _dir_key(entry: os.DirEntry[bytes]) -> tuple[int, int]:
    info = entry.stat(follow_symlinks=True)
    return (info.st_dev, info.st_ino)


def _excluded(path: bytes, root: bytes, patterns: list[bytes]) -> bool:
    if not patterns:
        return False
    relative = os.path.relpath(path, root)
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
