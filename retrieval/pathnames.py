"""File names as the catalogue stores them: raw bytes, so that any name survives.

Non-UTF-8 names arrive from the OS as surrogate-escaped `str`; SQLite refuses those as TEXT,
so the catalogue stores `os.fsencode(path)` and everything shown to people goes through
`display` (names) or `printable` (any text): control characters that a terminal would act on
(clear the screen, recolour, move the cursor, reorder text) are shown as escapes instead.
"""

from __future__ import annotations

import os


def to_bytes(path: str | bytes | os.PathLike[str]) -> bytes:
    """The absolute, normalised file name as raw bytes."""
    return os.fsencode(os.path.abspath(os.fsdecode(path)))


def to_str(raw: bytes) -> str:
    """The name as Python's `str` (surrogate-escaped where not UTF-8): lossless, JSON-safe."""
    return os.fsdecode(raw)


def decoded(raw: bytes) -> str:
    """The name as text, undecodable bytes shown as \\xNN escapes (control characters kept)."""
    return raw.decode("utf-8", "backslashreplace")


def display(raw: bytes) -> str:
    """A name for people: undecodable bytes and control characters shown as escapes."""
    return printable(decoded(raw))


#: Characters a terminal acts on rather than shows: C0 and C1 controls, DEL, the line and
#: paragraph separators, and the bidirectional marks, embeddings, overrides and isolates
#: (which can make `evil\u202egpj.exe` read as `evilexe.jpg`).
_UNSAFE = frozenset(
    [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F, 0x2028, 0x2029]
    + [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` safe to print to a terminal: unsafe characters become \\n, \\r, \\t, \\xNN or
    \\uNNNN, and surrogate-escaped bytes (non-UTF-8 names as `str`) become \\xNN."""
    if text.isprintable():  # the common case: nothing to escape (fast)
        return text
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if code not in _UNSAFE:
        return char
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def prefix_bounds(directory: bytes) -> tuple[bytes, bytes]:
    """Byte range [low, high) holding every path under `directory` (for SQL range scans)."""
    low = directory.rstrip(b"/") + b"/"
    return low, low[:-1] + b"0"  # '0' is the byte after '/'
