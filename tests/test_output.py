"""What search prints: control characters escaped for people, names exact for programs,
NUL-separated paths (-0) and the separator between queries."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from conftest import TINY, draw_image, run_cli, save_image

from retrieval.pathnames import display, printable

ESC_NAME = "\x1b[2J\x1b[31mred\r.jpg"
NEWLINE_NAME = "two\nlines.png"
BIDI_NAME = "gpj.\u202eexe.png"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An index over three images whose names hold terminal controls, a newline, a bidi
    override; the query is a copy of the first."""
    root = tmp_path_factory.mktemp("hostile")
    photos = root / "photos"
    for seed, name in enumerate([ESC_NAME, NEWLINE_NAME, BIDI_NAME]):
        save_image(draw_image(seed), photos / name)
    query = root / "query.jpg"
    save_image(draw_image(0), query)
    directory = root / "index"
    done = run_cli("index", photos, "--index", directory, *TINY)
    assert done.exit_code == 0, done.stderr
    names = {os.fsencode(photos / n) for n in (ESC_NAME, NEWLINE_NAME, BIDI_NAME)}
    return {"index": directory, "photos": photos, "query": query, "names": names}


def search(hostile: dict, *args: str | os.PathLike[str]):
    return run_cli("search", *args, "--index", hostile["index"])


CONTROLS = [chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]] + [
    "\u2028",
    "\u2029",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
]


def test_printable_escapes_every_control_character() -> None:
    for char in CONTROLS:
        shown = printable(f"a{char}b")
        assert char not in shown and shown.startswith("a\\") and shown.endswith("b"), repr(char)
    assert printable("a\x1b[2Jb\r\n\t") == "a\\x1b[2Jb\\r\\n\\t"
    assert printable("x\u202ey") == "x\\u202ey"
    assert printable("caf\u00e9 \u65e5\u672c") == "caf\u00e9 \u65e5\u672c"  # letters stay
    assert printable(os.fsdecode(b"bad\xff")) == "bad\\xff"  # surrogate-escaped byte
    assert display(b"\x1b[31m\xff.jpg") == "\\x1b[31m\\xff.jpg"


def test_table_escapes_control_characters_in_names(hostile: dict) -> None:
    result = search(hostile, hostile["query"], "-k", "3")
    assert result.exit_code == 0, result.stderr
    for char in CONTROLS:
        if char != "\n":
            assert char not in result.stdout, repr(char)
    lines = result.stdout.splitlines()
    assert len(lines) == 4  # the query and three results, one line each
    assert lines[1].endswith(f"{hostile['photos']}/\\x1b[2J\\x1b[31mred\\r.jpg")
    assert any(line.endswith("/two\\nlines.png") for line in lines)
    assert any(line.endswith("/gpj.\\u202eexe.png") for line in lines)


def test_csv_escapes_like_the_table(hostile: dict) -> None:
    result = search(hostile, hostile["query"], "-k", "3", "--format", "csv")
    assert result.exit_code == 0
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert len(rows) == 4
    assert rows[1][4] == f"{hostile['photos']}/\\x1b[2J\\x1b[31mred\\r.jpg"


def test_json_and_null_separated_paths_carry_names_exactly(hostile: dict) -> None:
    (found,) = search(hostile, hostile["query"], "-k", "3", "--format", "json").json()
    assert {os.fsencode(h["path"]) for h in found["results"]} == hostile["names"]
    result = search(hostile, hostile["query"], "-k", "3", "--format", "paths", "-0")
    assert result.exit_code == 0
    records = result.stdout_bytes.split(b"\0")
    assert records[-1] == b""  # every record ends with NUL
    assert set(records[:-1]) == hostile["names"]


def test_newline_paths_skip_a_name_holding_a_newline(hostile: dict) -> None:
    result = search(hostile, hostile["query"], "-k", "3", "--format", "paths")
    assert result.exit_code == 0
    lines = result.stdout_bytes.split(b"\n")
    assert lines[-1] == b""
    assert set(lines[:-1]) == hostile["names"] - {os.fsencode(hostile["photos"] / NEWLINE_NAME)}
    assert result.stderr == (
        f"retrieval: skipped {hostile['photos']}/two\\nlines.png: its name holds a newline; "
        "use -0 to separate paths with NUL\n"
    )


def test_paths_separate_queries_with_an_empty_record(tiny_index) -> None:
    queries = [tiny_index.queries["flip"], tiny_index.queries["crop"]]
    base = ("search", *queries, "--index", tiny_index.directory, "-k", "2")
    found = run_cli(*base, "--format", "json").json()
    expected = [[h["path"] for h in r["results"]] for r in found]

    lines = run_cli(*base, "--format", "paths").stdout
    assert lines == "\n".join(expected[0]) + "\n\n" + "\n".join(expected[1]) + "\n"
    nul = run_cli(*base, "--format", "paths", "--null").stdout
    assert nul == "\0".join(expected[0]) + "\0\0" + "\0".join(expected[1]) + "\0"
    one = run_cli("search", queries[0], "--index", tiny_index.directory, "-k", "2", "-0")
    assert one.stdout == "\0".join(expected[0]) + "\0"  # -0 implies --format paths


def test_null_with_another_format_is_a_usage_error(tiny_index) -> None:
    result = run_cli("search", tiny_index.queries["flip"], "-0", "--format", "json")
    assert (result.exit_code, result.stdout) == (2, "")
    assert "Error: -0/--null only goes with --format paths" in result.stderr


def test_errors_and_notices_escape_names(tiny_index, tmp_path: Path) -> None:
    missing = tmp_path / "\x1b[31mno\r.jpg"
    result = run_cli("search", missing, "--index", tiny_index.directory)
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr + result.stdout and "\r" not in result.stderr
    assert f"{tmp_path}/\\x1b[31mno\\r.jpg" in result.stderr


def test_paths_on_a_terminal_are_escaped(hostile: dict) -> None:
    """A real process whose stdout is a pseudo-terminal: paths are shown as in the table."""
    import pty
    import subprocess
    import sys

    main, child = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "retrieval", "search", hostile["query"], "-k", "3"]
            + ["--index", hostile["index"], "--format", "paths"],
            stdout=child,
            stderr=subprocess.PIPE,
            timeout=120,
        )
        os.close(child)
        child = -1
        shown = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the writer is gone and everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(main)
        if child >= 0:
            os.close(child)
    assert done.returncode == 0, done.stderr
    assert b"\x1b" not in shown and b"\\x1b[2J\\x1b[31mred\\r.jpg" in shown
    assert b"two\\nlines.png" in shown and b"gpj.\\u202eexe.png" in shown
