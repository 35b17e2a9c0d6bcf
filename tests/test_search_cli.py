"""`retrieval search` limits and mistakes: k, per-query errors, stdin, URLs and text,
format aliases, warnings, messages and help; and the group's --index."""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import shlex
import time
from pathlib import Path

import click
import numpy as np
import pytest
from conftest import draw_image, run_cli, save_image

from retrieval import Index
from retrieval.cli import cli
from retrieval.errors import UsageError
from retrieval.ops.searching import SearchFilter


def run_search(tiny_index, *args, env=None):
    return run_cli("search", *args, "--index", tiny_index.directory, env=env)


# -- k ------------------------------------------------------------------------------------------


def test_huge_k_is_capped_at_the_searchable_images(tiny_index) -> None:
    start = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run_search(
        tiny_index, tiny_index.queries["flip"], "-k", "2147483648", "--format", "json"
    )
    assert result.exit_code == 0, result.stderr
    assert len(result.json()[0]["results"]) == 8
    result = run_search(tiny_index, tiny_index.queries["flip"], "-k", "100000000", "-0")
    assert result.exit_code == 0 and result.stdout.count("\0") == 8
    assert time.monotonic() - start < 30
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 500_000  # 1e8 x (score + id) would be 1.2 GB


def test_library_caps_k_and_refuses_k_below_one(tiny_index) -> None:
    index = Index(tiny_index.directory)
    xq = np.eye(1, 96, dtype=np.float32)
    (found,) = index.search_vectors(xq, k=2**62)
    assert len(found.results) == 8
    (found,) = index.search_vectors(xq, k=3, filters=SearchFilter(formats=("PNG",)))
    assert len(found.results) == 3
    (like,) = index.search(like=[tiny_index.originals[0]], k=10**12)
    assert len(like.results) == 7  # everything but itself
    for k in (0, -1):
        with pytest.raises(UsageError, match=f"k must be at least 1, not {k}"):
            index.search_vectors(xq, k=k)


@pytest.mark.parametrize("k", ["0", "-5"])
def test_k_below_one_is_a_usage_error(tiny_index, k: str) -> None:
    result = run_search(tiny_index, tiny_index.queries["flip"], "-k", k)
    assert (result.exit_code, result.stdout) == (2, "")
    assert f"Error: Invalid value for '-k': {k} is not in the range x>=1." in result.stderr


# -- one bad query among good ones ----------------------------------------------------------


@pytest.fixture
def mixed(tiny_index, tmp_path: Path) -> dict:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    return {
        "args": [tiny_index.queries["flip"], tmp_path / "missing.jpg", broken],
        "missing": f"cannot use query image {tmp_path / 'missing.jpg'}: no such file",
        "broken": f"cannot use query image {broken}: ",
        "good": run_search(
            tiny_index, tiny_index.queries["flip"], "-k", "2", "--format", "json"
        ).json()[0]["results"],
    }


def test_a_bad_query_does_not_stop_the_others_json(tiny_index, mixed: dict) -> None:
    result = run_search(tiny_index, *mixed["args"], "-k", "2", "--format", "json")
    assert result.exit_code == 1
    good, missing, broken = result.json()
    assert good == {"query": str(mixed["args"][0]), "results": mixed["good"]}
    assert missing == {"query": str(mixed["args"][1]), "results": [], "error": mixed["missing"]}
    assert broken["error"].startswith(mixed["broken"]) and broken["results"] == []
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: {mixed['missing']}"
    assert lines[1].startswith(f"error: {mixed['broken']}") and len(lines) == 2


def test_a_bad_query_does_not_stop_the_others_table_csv_paths(tiny_index, mixed: dict) -> None:
    table = run_search(tiny_index, *mixed["args"], "-k", "2")
    assert table.exit_code == 1
    lines = table.stdout.splitlines()
    assert lines[:3] == [
        str(mixed["args"][0]),
        *[f"  {n:>3}  {h['score']:6.3f}  {h['path']}" for n, h in enumerate(mixed["good"], 1)],
    ]
    assert lines[3:5] == [str(mixed["args"][1]), f"  error: {mixed['missing']}"]
    assert lines[5] == str(mixed["args"][2]) and lines[6].startswith(f"  error: {mixed['broken']}")
    assert table.stderr.count("error: ") == 2

    rows = list(
        csv.reader(
            io.StringIO(run_search(tiny_index, *mixed["args"], "-k", "2", "--format", "csv").stdout)
        )
    )
    assert rows[0] == ["query", "rank", "score", "id", "path", "error"]
    assert [r[0] for r in rows[1:]] == [str(q) for q in [mixed["args"][0]] * 2 + mixed["args"][1:]]
    assert rows[3] == [str(mixed["args"][1]), "", "", "", "", mixed["missing"]]
    assert rows[1][5] == ""

    paths = run_search(tiny_index, *mixed["args"], "-k", "2", "--format", "paths")
    assert paths.exit_code == 1
    # the failed queries are empty groups, after the separating empty lines
    assert paths.stdout == "".join(h["path"] + "\n" for h in mixed["good"]) + "\n\n"
    assert paths.stderr.splitlines()[0] == f"error: {mixed['missing']}"


def test_library_reports_a_bad_query_in_its_result(tiny_index, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jpg"
    good, bad = Index(tiny_index.directory).search([tiny_index.queries["crop"], missing], k=1)
    assert good.error is None and len(good.results) == 1
    assert bad.error == f"cannot use query image {missing}: no such file" and bad.results == []
    assert bad.to_dict() == {"query": str(missing), "results": [], "error": bad.error}


def test_like_a_stranger_among_good_likes(tiny_index, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger.jpg"
    result = run_search(
        tiny_index,
        "--like",
        tiny_index.originals[1],
        "--like",
        stranger,
        "-k",
        "1",
        "--format",
        "json",
    )
    assert result.exit_code == 1
    good, bad = result.json()
    assert len(good["results"]) == 1 and "error" not in good
    assert bad["error"].startswith(f"{stranger} is not in the index at {tiny_index.directory}")


# -- stdin, URLs, text ------------------------------------------------------------------------


def encoded(image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_dash_reads_one_query_image_from_stdin(tiny_index) -> None:
    from PIL import Image

    data = tiny_index.queries["flip"].read_bytes()
    expected = run_search(tiny_index, tiny_index.queries["flip"], "--format", "json").json()[0]
    result = run_cli_stdin(data, "search", "-", "--index", tiny_index.directory, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert result.json() == [{**expected, "query": "-"}]
    assert Image.open(io.BytesIO(data)).format == "JPEG"


def run_cli_stdin(data: bytes, *args):
    """run_cli with `data` on stdin."""
    from click.testing import CliRunner

    from retrieval.cli import main

    runner = CliRunner()
    with runner.isolation(input=data) as (out, err, _):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
        from conftest import CliResult

        return CliResult(code, out.getvalue().decode(), err.getvalue().decode())


def test_stdin_query_uses_the_decoder_and_its_limits(tiny_index) -> None:
    big = encoded(draw_image(1, (1200, 1000)))
    result = run_cli_stdin(
        big, "search", "-", "--index", tiny_index.directory, "--max-megapixels", "1"
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot use query image -: image is 1.2 MP")
    result = run_cli_stdin(b"", "search", "-", "--index", tiny_index.directory)
    assert (result.exit_code, result.stderr) == (
        1,
        "error: cannot use query image -: empty input\n",
    )
    result = run_cli_stdin(b"not an image", "search", "-", "--index", tiny_index.directory)
    assert result.exit_code == 1 and result.stderr.startswith("error: cannot use query image -: ")


def test_stdin_is_read_once(tiny_index) -> None:
    result = run_cli_stdin(b"", "search", "-", "-", "--index", tiny_index.directory)
    assert (result.exit_code, result.stdout) == (2, "")
    assert "Error: give - (stdin) at most once" in result.stderr


def test_stdin_read_is_bounded(tiny_index, monkeypatch: pytest.MonkeyPatch) -> None:
    from retrieval.ops import searching

    monkeypatch.setattr(searching, "MAX_FILE_BYTES", 1000)
    result = run_cli_stdin(b"x" * 5000, "search", "-", "--index", tiny_index.directory)
    assert result.stderr == (
        "error: cannot use query image -: more than 1000 bytes on stdin; save the image to a "
        "file and search with that\n"
    )


@pytest.mark.parametrize(
    "url", ["https://example.com/cat.jpg", "http://x/y", "ftp://host/a.png", "file:///tmp/a.jpg"]
)
def test_a_url_gets_a_download_hint(tiny_index, url: str) -> None:
    result = run_search(tiny_index, url)
    assert (result.exit_code, result.stderr) == (
        1,
        f"error: cannot use query image {url}: search takes example images, not URLs; download "
        f"the URL first, e.g. curl -sL {shlex.quote(url)} | retrieval search -\n",
    )


@pytest.mark.parametrize("text", ["a red car", "sunset", "dog on a beach"])
def test_text_gets_an_example_image_hint(tiny_index, text: str) -> None:
    result = run_search(tiny_index, text)
    assert (result.exit_code, result.stderr) == (
        1,
        f"error: cannot use query image {Path(text).absolute()}: no such file; search takes "
        "example images, not text: give the path of an image that looks like what you want\n",
    )


# -- filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "suffix"), [("JPG", ".jpg"), ("jpg", ".jpg"), ("jpeg", ".jpg"), ("png", ".png")]
)
def test_image_format_aliases(tiny_index, given: str, suffix: str) -> None:
    result = run_search(tiny_index, tiny_index.queries["flip"], "--image-format", given, "-0")
    assert (result.exit_code, result.stderr) == (0, "")
    paths = result.stdout.split("\0")[:-1]
    assert len(paths) == 4 and all(p.endswith(suffix) for p in paths)


def test_library_normalises_format_aliases() -> None:
    assert SearchFilter(formats=("jpg", "Tif", "JPEG", "png")).formats == (
        "JPEG",
        "TIFF",
        "JPEG",
        "PNG",
    )


def test_unknown_format_and_empty_under_warn(tiny_index, tmp_path: Path) -> None:
    result = run_search(tiny_index, tiny_index.queries["flip"], "--image-format", "jpgg")
    assert result.exit_code == 0
    assert result.stdout == f"{tiny_index.queries['flip']}\n  (no results)\n"
    assert result.stderr.startswith(
        "retrieval: --image-format jpgg is not an image format (known: "
    )
    assert "JPEG" in result.stderr and result.stderr.endswith("); no image matches it\n")
    result = run_search(
        tiny_index,
        tiny_index.queries["flip"],
        "--under",
        tmp_path,
        "--under",
        tiny_index.photos / "sub",
    )
    assert result.exit_code == 0
    assert result.stderr == (
        f"retrieval: no indexed image is under {tmp_path}; check the folder "
        "(see `retrieval info` for what the index holds)\n"
    )
    assert result.stdout.count("\n") == 5  # the query and the four images under sub/


def test_library_warns_through_notify(tiny_index, tmp_path: Path) -> None:
    notices: list[str] = []
    Index(tiny_index.directory, notify=notices.append).search_vectors(
        np.eye(1, 96, dtype=np.float32), filters=SearchFilter(under=(str(tmp_path),))
    )
    assert notices == [
        f"no indexed image is under {tmp_path}; check the folder "
        "(see `retrieval info` for what the index holds)"
    ]


# -- messages, options, help ------------------------------------------------------------------


def test_search_has_max_megapixels(tiny_index, tmp_path: Path) -> None:
    big = save_image(draw_image(3, (1200, 1000)), tmp_path / "big.png")
    result = run_search(tiny_index, big.decode(), "--max-megapixels", "1")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot use query image {big.decode()}: image is 1.2 MP, above the "
        "limit of 1 MP; raise it with --max-megapixels if the file is trusted\n"
    )
    result = run_search(tiny_index, big.decode(), "--max-megapixels", "2", "-k", "1")
    assert result.exit_code == 0


def test_ctrl_c_during_search_just_says_interrupted(tiny_index, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Index, "search", interrupted)
    result = run_search(tiny_index, tiny_index.queries["flip"])
    assert (result.exit_code, result.stdout, result.stderr) == (130, "", "retrieval: interrupted\n")


@pytest.mark.parametrize("score", ["1.5", "-1.01", "nan"])
def test_min_score_outside_cosine_range_is_a_usage_error(tiny_index, score: str) -> None:
    result = run_search(tiny_index, tiny_index.queries["flip"], "--min-score", score)
    assert (result.exit_code, result.stdout) == (2, "")
    assert "Error: Invalid value for '--min-score'" in result.stderr


def test_library_refuses_min_score_outside_cosine_range(tiny_index) -> None:
    with pytest.raises(UsageError, match="min_score must be a cosine between -1 and 1, not 1.5"):
        Index(tiny_index.directory).search(like=[tiny_index.originals[0]], min_score=1.5)


def test_index_option_on_the_group(tiny_index, tmp_path: Path) -> None:
    query = tiny_index.queries["flip"]
    result = run_cli("--index", tiny_index.directory, "search", query, "-k", "1", "-0")
    assert (result.exit_code, result.stdout) == (0, f"{tiny_index.query_sources['flip']}\0")
    # the subcommand's own --index wins
    result = run_cli("--index", tmp_path / "nowhere", "search", query, "-k", "1", "-0",
                     "--index", tiny_index.directory)  # fmt: skip
    assert result.exit_code == 0
    # the group's --index beats the environment
    env = {"RETRIEVAL_INDEX": str(tmp_path / "nowhere")}
    result = run_cli("--index", tiny_index.directory, "info", "--json", env=env)
    assert result.exit_code == 0 and result.json()["images"] == 8
    result = run_cli("info", "--json", env={"RETRIEVAL_INDEX": str(tiny_index.directory)})
    assert result.exit_code == 0 and result.json()["images"] == 8


def test_import_has_quiet(tiny_index, tmp_path: Path) -> None:
    out = tmp_path / "e.parquet"
    assert run_cli("export", "--index", tiny_index.directory, "-o", out).exit_code == 0
    result = run_cli("import", out, "--index", tmp_path / "new", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""


def _commands():
    yield "retrieval", cli
    for name, command in sorted(cli.commands.items()):
        yield f"retrieval {name}", command


@pytest.mark.parametrize(("name", "command"), list(_commands()))
def test_every_command_and_option_has_help(name: str, command: click.Command) -> None:
    assert command.help, f"{name} has no help text"
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("help", "version"):
            assert param.help, f"{name} {'/'.join(param.opts)} has no help text"


def test_help_json_schema_is_unchanged(tiny_index) -> None:
    found = run_search(tiny_index, tiny_index.queries["crop"], "-k", "1", "--format", "json")
    assert set(json.loads(found.stdout)[0]) == {"query", "results"}


def test_dash_reads_a_real_pipe(tiny_index) -> None:
    """`cat image | retrieval search -` in a real process (stdin is a pipe, not a buffer)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "retrieval", "search", "-", "-k", "1", "-0"]
        + ["--index", str(tiny_index.directory)],
        input=tiny_index.queries["crop"].read_bytes(),
        capture_output=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == os.fsencode(tiny_index.query_sources["crop"]) + b"\0"


def test_dash_refuses_a_terminal_on_stdin(tiny_index) -> None:
    import pty
    import subprocess
    import sys

    main, child = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "retrieval", "search", "-", "--index", tiny_index.directory],
            stdin=child,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.close(main)
        os.close(child)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.endswith(
        "Error: - reads the query image from stdin, which is a terminal; pipe an image in, "
        "e.g. curl -sL URL | retrieval search -\n"
    )
