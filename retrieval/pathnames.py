"""File names as the catalogue stores them: raw bytes, so that any name survives.

Non-UTF-8 names arrive from the OS as surrogate-escaped `str`; SQLite refuses those as TEXT,
so the catalogue stores `os.fsencode(path)` and everything shown to people goes through
`display`.
"""

from __future__ import annotations

import os


def to_bytes(path: str | bytes | os.PathLike[str]) -> bytes:
    """The absolute, normalised file name as raw bytes."""
    return os.fsencode(os.path.abspath(os.fsdecode(path)))


def to_str(raw: bytes) -> str:
    """The name as Python's `str` (surrogate-escaped where not UTF-8): lossless, JSON-safe."""
    return os.fsdecode(raw)


def display(raw: bytes) -> str:
    """A printable name: undecodable bytes shown as \\xNN escapes."""
    return raw.decode("utf-8", "backslashreplace")


def prefix_bounds(directory: bytes) -> tuple[bytes, bytes]:
    """Byte range [low, high) holding every path under `directory` (for SQL range scans)."""
    low = directory.rstrip(b"/") + b"/"
    return low, low[:-1] + b"0"  # '0' is the byte after '/'
