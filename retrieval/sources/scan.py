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

import os
import re
import stat
from collections import Counter
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


@dataclass(frozen=True)
class EmptyRoot:
    """A folder given to the walk that held no image: `skipped` counts the other files in
    it by lower-cased extension ("" for none), so the user can see what was there."""

    path: bytes
    skipped: dict[str, int]


@dataclass
class ScanResult:
    """What a walk found: files sorted by path, the places it could not read, and the
    folders given that held no image at all."""

    files: list[FileEntry] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)
    empty_roots: list[EmptyRoot] = field(default_factory=list)

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


def vanished(path: bytes) -> bool:
    """Whether a file or folder is gone from disk: stat fails with ENOENT or ENOTDIR. Any
    other failure (permission, I/O) is no proof that it is gone."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


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
    patterns (see `compile_excludes` for the rule). Raises UsageError if a root does not
    exist or a pattern is empty; anything unreadable is listed in `problems`.
    """
    allowed = supported_extensions() if extensions is None else extensions
    patterns = compile_excludes(exclude)
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
        skipped: Counter[str] = Counter()
        if stat.S_ISDIR(st.st_mode):
            problems = result.problems
            walker = _walk(root_b, st, patterns, follow_symlinks, allowed, problems, skipped)
        elif stat.S_ISREG(st.st_mode):
            link = os.path.islink(root_b)
            single = FileEntry(root_b, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, link)
            walker = iter([single])
        else:
            result.problems.append(ScanProblem(root_b, NOT_REGULAR))
            continue
        images = 0
        for entry in walker:
            images += 1
            if entry.path not in seen:
                seen.add(entry.path)
                result.files.append(entry)
        if images == 0 and stat.S_ISDIR(st.st_mode):
            result.empty_roots.append(EmptyRoot(root_b, dict(skipped)))
    result.files.sort(key=lambda e: e.path)
    return result


def _walk(
    root: bytes,
    root_stat: os.stat_result,
    patterns: list[ExcludeRule],
    follow_symlinks: bool,
    allowed: frozenset[str],
    problems: list[ScanProblem],
    skipped: Counter[str],
) -> Iterator[FileEntry]:
    """Image files under `root`; other regular files are counted in `skipped` by extension."""
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
            try:
                if entry.is_symlink() and not follow_symlinks:
                    continue
                is_dir = entry.is_dir(follow_symlinks=True)
                if patterns and _excluded(path, root, is_dir, patterns):
                    continue
                if is_dir:
                    key = _dir_key(entry)
                    if key not in visited:
                        visited.add(key)
                        stack.append(path)
                    continue
                if not entry.is_file(follow_symlinks=True):
                    continue
                extension = os.path.splitext(entry.name)[1].decode("utf-8", "replace").lower()
                if extension in allowed:
                    info = entry.stat(follow_symlinks=True)
                    yield FileEntry(
                        path,
                        info.st_size,
                        info.st_mtime_ns,
                        info.st_dev,
                        info.st_ino,
                        entry.is_symlink(),
                    )
                else:
                    skipped[extension] += 1
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


@dataclass(frozen=True)
class ExcludeRule:
    """One compiled --exclude pattern: what it is matched against and the regex."""

    pattern: str
    target: str  # "name", "relative" (to the root) or "absolute"
    folders_only: bool
    regex: re.Pattern[bytes]


def compile_excludes(patterns: Iterable[str]) -> list[ExcludeRule]:
    """Compile --exclude patterns. The rule (find / rsync / .gitignore users expect it):

    - a pattern is tried on every file and folder under a root (never on the root itself);
      a folder it matches is not entered, so everything under it is excluded;
    - a trailing `/` makes it match folders only (`cache/`);
    - without a `/` it matches a name at any depth (`*.png`, `thumbnails`, `.*`);
    - starting with `/` it matches the absolute path (`/photos/2023/private`);
    - any other pattern with a `/` matches the path relative to the root (`raw/2023`), and a
      leading `*/` or `**/` lets it start at any depth, the root's own level included
      (`*/thumbnails/*` excludes `thumbnails/a.jpg` and `x/y/thumbnails/b.jpg`);
    - `*`, `?` and `[...]` (`[!...]` negates) match within one name, `**` across folders;
      matching is case-sensitive.

    Raises UsageError for an empty pattern.
    """
    rules = []
    for pattern in patterns:
        body = pattern
        folders_only = body.endswith("/") and body.strip("/") != ""
        body = body.rstrip("/") if folders_only else body
        if not body:
            raise UsageError("an --exclude pattern is empty; give a name or glob like '*.png'")
        if "/" not in body:
            target = "name"
        elif body.startswith("/"):
            target = "absolute"
        else:
            target = "relative"
            if body.startswith("*/"):
                body = "*" + body  # any depth, as `**/`
        regex = re.compile(_translate(os.fsencode(body)), re.DOTALL)
        rules.append(ExcludeRule(pattern, target, folders_only, regex))
    return rules


def _translate(pattern: bytes) -> bytes:
    """A glob (bytes) as a regex: `**/` any folders (or none), `**` anything, `*` and `?`
    within one name, `[...]` a class; everything else literal."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i : i + 1]
        if pattern.startswith(b"**/", i):
            out.append(b"(?:.*/)?")
            i += 3
            continue
        if pattern.startswith(b"**", i):
            out.append(b".*")
            i += 2
            continue
        i += 1
        if c == b"*":
            out.append(b"[^/]*")
        elif c == b"?":
            out.append(b"[^/]")
        elif c == b"[" and (end := _class_end(pattern, i)) > 0:
            negate = pattern[i : i + 1] == b"!"
            members = pattern[i + negate : end]
            # every member escaped ('[', '&&' would read as set syntax) but '-', the range
            escaped = b"".join(b"-" if m == ord("-") else re.escape(bytes([m])) for m in members)
            out.append(b"[" + b"^" * negate + escaped + b"]")
            i = end + 1
        else:
            out.append(re.escape(c))
    return b"".join(out)


def _class_end(pattern: bytes, start: int) -> int:
    """Index of the `]` closing a class whose body starts at `start`, or -1 (then the `[`
    is literal, as in fnmatch)."""
    j = start + (pattern[start : start + 1] == b"!")
    j += pattern[j : j + 1] == b"]"  # a leading `]` is a member, not the end
    return pattern.find(b"]", j)


def _excluded(path: bytes, root: bytes, is_dir: bool, rules: list[ExcludeRule]) -> bool:
    """Whether an --exclude rule matches this file or folder (see `compile_excludes`)."""
    relative = path[len(root.rstrip(b"/")) + 1 :]
    for rule in rules:
        if rule.folders_only and not is_dir:
            continue
        if rule.target == "name":
            subject = os.path.basename(path)
        elif rule.target == "absolute":
            subject = path
        else:
            subject = relative
        if rule.regex.fullmatch(subject):
            return True
    return False


#: The reason given for a FIFO, socket or device named as a root.
NOT_REGULAR = "not a regular file or folder (a FIFO, socket or device); skipped"


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _folder_reason(exc: OSError) -> str:
    return (
        f"cannot list this folder ({_reason(exc)}); the images indexed under it are kept "
        "until it can be read: fix its permissions and run again"
    )
