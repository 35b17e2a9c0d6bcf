"""End to end through the command line: index, search, export, info, errors and help."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    SUITE_PRECISION,
    TINY,
    TINY_DIM,
    cropped,
    draw_image,
    flipped,
    make_photos,
    run_cli,
    run_module,
    save_image,
)

from retrieval import __version__
from retrieval.cli import cli

INDEX_KEYS = {"added", "updated", "unchanged", "moved", "removed", "failed"}
UNKNOWN = "not a supported image (unknown or corrupt header)"


def search_json(tiny_index, *args) -> list[dict]:
    result = run_cli("search", *args, "--index", tiny_index.directory, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    return result.json()


# -- index -----------------------------------------------------------------------------------


def test_index_json_report(tiny_index) -> None:
    report = tiny_index.report
    assert INDEX_KEYS <= set(report)
    assert {key: report[key] for key in INDEX_KEYS} == {
        "added": 8,
        "updated": 0,
        "unchanged": 0,
        "moved": 0,
        "removed": 0,
        "failed": [{"path": str(tiny_index.broken), "error": UNKNOWN}],
    }
    assert all(type(report[key]) is int for key in INDEX_KEYS - {"failed"})


@pytest.mark.precision
def test_index_text_report_and_device_line(tmp_path: Path) -> None:
    make_photos(tmp_path / "p", [1, 2])
    (tmp_path / "p" / "empty.png").write_bytes(b"")
    args = [a for a in TINY if a != "--quiet"]
    result = run_cli("index", tmp_path / "p", "--index", tmp_path / "i", *args)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("2 added, 0 updated, 0 unchanged, 0 moved, 0 removed, 1 failed in ")
    assert lines[0].endswith(" s")
    assert lines[1:] == [f"  failed: {tmp_path / 'p' / 'empty.png'}: empty file"]
    assert result.stderr == f"retrieval: embedding with test_resnet on cpu, {SUITE_PRECISION}\n"
    again = run_cli("index", tmp_path / "p", "--index", tmp_path / "i", "--quiet")
    assert (again.exit_code, again.stderr) == (0, "")
    assert again.stdout.startswith("0 added, 0 updated, 2 unchanged, 0 moved, 0 removed, 1 failed")


def test_every_bad_input_kind_is_listed_and_the_run_succeeds(tmp_path: Path) -> None:
    photos = tmp_path / "p"
    make_photos(photos, [1])
    good = draw_image(2, (200, 150))
    buffer = io.BytesIO()
    good.save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    bad = {
        "empty.jpg": b"",
        "garbage.png": os.urandom(3000),
        "text.jpg": b"just some text\n" * 40,
        "truncated.jpg": jpeg[: len(jpeg) // 2],
    }
    for name, data in bad.items():
        (photos / name).write_bytes(data)
    save_image(Image_big(), photos / "huge.png")
    result = run_cli(
        "index", photos, "--index", tmp_path / "i", *TINY, "--json", "--max-megapixels", "0.5"
    )
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["added"] == 1
    failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
    assert set(failed) == set(bad) | {"huge.png"}
    assert failed["empty.jpg"] == "empty file"
    assert failed["garbage.png"] == UNKNOWN
    assert failed["text.jpg"] == UNKNOWN
    assert failed["truncated.jpg"].startswith("truncated or corrupt image data (")
    assert failed["huge.png"] == (
        "image is 0.8 MP, above the limit of 0.5 MP; "
        "raise it with --max-megapixels if the file is trusted"
    )
    info = run_cli("info", "--index", tmp_path / "i", "--json").json()
    assert (info["images"], info["failed"]) == (1, 5)


def Image_big():
    from PIL import Image

    return Image.new("RGB", (1000, 800), (10, 20, 30))


def test_index_with_decode_workers_gives_the_same_vectors(tiny_index, tmp_path: Path) -> None:
    args = [a for a in TINY if a not in ("--workers", "0")]
    result = run_cli(
        "index",
        tiny_index.photos,
        "--index",
        tmp_path / "i",
        *args,
        "--workers",
        "2",
        "--batch-size",
        "3",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert result.json()["added"] == 8
    assert result.json()["failed"] == tiny_index.report["failed"]
    mine, theirs = tmp_path / "mine.npy", tmp_path / "theirs.npy"
    assert (
        run_cli("export", "--index", tmp_path / "i", "--format", "npy", "-o", mine).exit_code == 0
    )
    assert (
        run_cli(
            "export", "--index", tiny_index.directory, "--format", "npy", "-o", theirs
        ).exit_code
        == 0
    )

    def by_path(npy: Path) -> dict[str, np.ndarray]:
        rows = json.loads(npy.with_suffix(".rows.json").read_text())["rows"]
        matrix = np.load(npy)
        return {r["path"]: matrix[i] for i, r in enumerate(rows)}

    a, b = by_path(mine), by_path(theirs)
    assert sorted(a) == sorted(b) == sorted(map(str, tiny_index.originals))
    for path in a:
        np.testing.assert_allclose(a[path], b[path], atol=1e-5)


def test_missing_folder_is_refused_before_an_index_is_made(tmp_path: Path) -> None:
    missing = tmp_path / "Picturs"
    result = run_cli("index", missing, "--index", tmp_path / "i", *TINY)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"error: {missing} does not exist; check the path\n"
    assert not (tmp_path / "i").exists()


# -- search ----------------------------------------------------------------------------------


@pytest.mark.parametrize("edit", ["flip", "crop"])
def test_search_finds_the_original_of_an_edited_copy(tiny_index, edit: str) -> None:
    (result,) = search_json(tiny_index, tiny_index.queries[edit], "-k", "3")
    assert result["results"][0]["path"] == str(tiny_index.query_sources[edit])


def test_search_json_schema(tiny_index) -> None:
    queries = [tiny_index.queries["flip"], tiny_index.queries["crop"]]
    results = search_json(tiny_index, *queries, "-k", "5")
    assert [r["query"] for r in results] == [str(q) for q in queries]
    indexed = set(map(str, tiny_index.originals))
    for result in results:
        assert set(result) == {"query", "results"}
        assert len(result["results"]) == 5
        for hit in result["results"]:
            assert set(hit) == {"id", "path", "score"}
            assert type(hit["id"]) is int and type(hit["score"]) is float
            assert os.path.isabs(hit["path"]) and hit["path"] in indexed
        scores = [h["score"] for h in result["results"]]
        assert scores == sorted(scores, reverse=True)
        assert len({h["id"] for h in result["results"]}) == 5


def test_k_larger_than_the_index_returns_every_image(tiny_index) -> None:
    (result,) = search_json(tiny_index, tiny_index.queries["flip"], "-k", "100")
    assert sorted(h["path"] for h in result["results"]) == sorted(map(str, tiny_index.originals))
    (result,) = search_json(tiny_index, tiny_index.queries["flip"])  # default -k 10
    assert len(result["results"]) == 8


def test_min_score(tiny_index) -> None:
    query = tiny_index.queries["crop"]
    (full,) = search_json(tiny_index, query, "-k", "8")
    scores = [h["score"] for h in full["results"]]
    threshold = (scores[1] + scores[2]) / 2
    (cut,) = search_json(tiny_index, query, "-k", "8", "--min-score", str(threshold))
    assert cut["results"] == full["results"][:2]
    (none,) = search_json(tiny_index, query, "--min-score", "1")  # a crop is not the original
    assert none == {"query": str(query), "results": []}
    table = run_cli("search", query, "--index", tiny_index.directory, "--min-score", "1")
    assert table.stdout == f"{query}\n  (no results)\n"


def test_search_formats_agree(tiny_index) -> None:
    queries = [tiny_index.queries["flip"], tiny_index.queries["crop"]]
    base = ("search", *queries, "--index", tiny_index.directory, "-k", "3")
    results = run_cli(*base, "--format", "json").json()

    table = run_cli(*base)  # table is the default
    expected = []
    for r in results:
        expected.append(r["query"])
        for rank, hit in enumerate(r["results"], 1):
            expected.append(f"  {rank:>3}  {hit['score']:6.3f}  {hit['path']}")
    assert (table.exit_code, table.stdout.splitlines()) == (0, expected)

    rows = list(csv.reader(io.StringIO(run_cli(*base, "--format", "csv").stdout)))
    assert rows[0] == ["query", "rank", "score", "id", "path", "error"]
    assert rows[1:] == [
        [r["query"], str(rank), f"{hit['score']:.6f}", str(hit["id"]), hit["path"], ""]
        for r in results
        for rank, hit in enumerate(r["results"], 1)
    ]

    paths = run_cli(*base, "--format", "paths")  # an empty line between queries
    assert paths.stdout == "\n".join(
        "".join(h["path"] + "\n" for h in r["results"]) for r in results
    )


@pytest.mark.precision
def test_search_equals_brute_force_over_the_exported_vectors(
    tiny_index, tiny_embedder, tmp_path: Path
) -> None:
    from retrieval.ops.searching import embed_queries

    out = tmp_path / "all.npy"
    assert (
        run_cli("export", "--index", tiny_index.directory, "--format", "npy", "-o", out).exit_code
        == 0
    )
    xb = np.load(out)
    rows = json.loads((tmp_path / "all.rows.json").read_text())["rows"]
    queries = [tiny_index.queries["flip"], tiny_index.queries["crop"], tiny_index.originals[0]]
    xq = embed_queries(tiny_embedder, queries, 100.0)
    results = search_json(tiny_index, *queries, "-k", "8")
    for q, result in enumerate(results):
        scores = xb @ xq[q]
        order = np.argsort(-scores, kind="stable")
        assert [h["id"] for h in result["results"]] == [rows[i]["id"] for i in order]
        np.testing.assert_allclose(
            [h["score"] for h in result["results"]], scores[order], atol=2e-6
        )
    assert results[2]["results"][0]["path"] == str(tiny_index.originals[0])
    assert results[2]["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_search_needs_no_model_flags_and_reads_the_env_index(tiny_index) -> None:
    env = {"RETRIEVAL_INDEX": str(tiny_index.directory)}
    result = run_cli("search", tiny_index.queries["flip"], "-k", "1", "--format", "paths", env=env)
    assert (result.exit_code, result.stdout) == (0, f"{tiny_index.query_sources['flip']}\n")


# -- export and info -------------------------------------------------------------------------


def test_export_message(tiny_index, tmp_path: Path) -> None:
    out = tmp_path / "e.npy"
    result = run_cli("export", "--index", tiny_index.directory, "--format", "npy", "-o", out)
    assert result.stdout == (
        f"exported 8 embeddings ({TINY_DIM}-d) to {out}, {tmp_path / 'e.rows.json'}\n"
    )
    result = run_cli("export", "--index", tiny_index.directory, "-o", tmp_path / "e.parquet")
    assert result.stdout == f"exported 8 embeddings ({TINY_DIM}-d) to {tmp_path / 'e.parquet'}\n"


def test_info_json(tiny_index) -> None:
    info = run_cli("info", "--index", tiny_index.directory, "--json").json()
    assert {"images": 8, "failed": 1, "dim": TINY_DIM, "model": "test_resnet"}.items() <= (
        info.items()
    )
    assert info["pretrained"] is False
    assert info["weights"] == "untrained (seed 0)"
    assert info["bytes_on_disk"] > 0
    text = run_cli("info", "--index", tiny_index.directory)
    assert "images: 8" in text.stdout and "model: test_resnet" in text.stdout


# -- user mistakes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["search", "QUERY"], ["info"], ["export", "-o", "OUT"], ["info", "--json"]],
)
def test_missing_index_is_one_line(tmp_path: Path, tiny_index, command: list[str]) -> None:
    missing = tmp_path / "nowhere"
    args = [
        str(tiny_index.queries["flip"]) if a == "QUERY" else str(tmp_path / "x") if a == "OUT"
        else a for a in command
    ]  # fmt: skip
    result = run_cli(*args, "--index", missing)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: no index at {missing}: build one with `retrieval index --index {missing} FOLDER`\n"
    )
    assert not missing.exists()


def test_missing_index_in_a_real_process(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    done = run_module("info", "--index", missing)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"error: no index at {missing}: build one with `retrieval index --index {missing} FOLDER`\n"
    )


def test_broken_query_image(tiny_index, tmp_path: Path) -> None:
    broken = tmp_path / "q.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    result = run_cli("search", tiny_index.queries["flip"], broken, "--index", tiny_index.directory)
    assert result.exit_code == 1  # after printing the good query's results
    assert result.stdout.startswith(f"{tiny_index.queries['flip']}\n    1  ")
    assert result.stdout.splitlines()[-2:] == [
        str(broken),
        result.stderr.rstrip("\n").join(["  ", ""]),
    ]
    assert result.stderr.startswith(f"error: cannot use query image {broken}: ")
    assert result.stderr.count("\n") == 1
    missing = tmp_path / "nope.jpg"
    result = run_cli("search", missing, "--index", tiny_index.directory)
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot use query image {missing}: no such file\n"
    result = run_cli("search", tmp_path, "--index", tiny_index.directory)
    assert result.stderr == (
        f"error: cannot use query image {tmp_path}: is a directory, not an image file\n"
    )


def test_model_mismatch_is_refused_with_the_rebuild_command(tmp_path: Path) -> None:
    make_photos(tmp_path / "p", [1])
    directory = tmp_path / "i"
    assert run_cli("index", tmp_path / "p", "--index", directory, *TINY).exit_code == 0
    for extra in (["--model", "resnet18"], ["--model", "resnet18", "--no-pretrained"]):
        result = run_cli("index", tmp_path / "p", "--index", directory, *extra)
        assert (result.exit_code, result.stdout) == (1, "")
        assert result.stderr == (
            f"error: the index at {directory} was built with test_resnet (untrained (seed 0)), "
            "not resnet18; leave out --model to use test_resnet, or build a new index for it: "
            f"`retrieval index --index NEW_DIR FOLDER` (or delete {directory})\n"
        )
    weights = tmp_path / "w.pth"
    import torch

    torch.save({}, weights)
    result = run_cli(
        "index",
        tmp_path / "p",
        "--index",
        directory,
        "--model",
        "test_resnet",
        "--weights",
        weights,
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: the index at {directory} was built with test_resnet untrained (seed 0), not "
        f"file {weights}"
    )
    assert "`retrieval index --index NEW_DIR FOLDER`" in result.stderr
    same = run_cli("index", tmp_path / "p", "--index", directory, *TINY, "--json")
    assert same.exit_code == 0 and same.json()["unchanged"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "x.jpg", "--format", "xml"], "Error: Invalid value for '--format': "),
        (["search", "x.jpg", "-k", "0"], "Error: Invalid value for '-k': 0 is not in the range"),
        (
            ["index", "p", "--weights", "W", "--no-pretrained"],
            "Error: --weights and --no-pretrained exclude each other",
        ),
        (["index", "p", "--batch-size", "0"], "Error: Invalid value for '--batch-size'"),
        (["export", "--format", "csv", "-o", "x"], "Error: Invalid value for '--format'"),
        (["frobnicate"], "Error: No such command 'frobnicate'."),
        (["info", "--no-such-option"], "Error: No such option '--no-such-option'."),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    args = [str(weights) if a == "W" else a for a in args]
    result = run_cli(*args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1].startswith(message), result.stderr
    assert "Traceback" not in result.stderr


def test_export_to_a_missing_folder(tiny_index, tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "e.parquet"
    result = run_cli("export", "--index", tiny_index.directory, "-o", out)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: the folder {out.parent} does not exist; create it or choose another -o\n"
    )


# -- help and version -------------------------------------------------------------------------


def test_version() -> None:
    result = run_cli("--version")
    assert (result.exit_code, result.stdout) == (0, f"retrieval, version {__version__}\n")


@pytest.mark.parametrize("command", [None, *sorted(cli.commands)])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help_with_an_example(command: str | None, flag: str) -> None:
    result = run_cli(*([command] if command else []), flag)
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: retrieval {command + ' ' if command else ''}")
    assert "Example" in result.stdout
    body = result.stdout.split("Example")[1]
    assert "retrieval " in body  # the example is a command line


def test_core_commands_exist() -> None:
    assert {"index", "search", "export", "info"} <= set(cli.commands)


def test_python_dash_m_help_and_version() -> None:
    done = run_module("--help")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("Usage: retrieval [OPTIONS] COMMAND [ARGS]...")
    for command in ("index", "search", "export", "info"):
        assert f"  {command} " in done.stdout
    done = run_module("--version")
    assert (done.returncode, done.stdout) == (0, f"retrieval, version {__version__}\n")


# -- the product's reference backbone ---------------------------------------------------------


@pytest.mark.slow
def test_resnet50_end_to_end(tmp_path: Path) -> None:
    """resnet50 (untrained: no network here) at its native 224 px input, 2048-d vectors."""
    photos = tmp_path / "p"
    originals = make_photos(photos, [30, 31, 32], size=(256, 224))
    query = save_image(flipped(draw_image(31, (256, 224))), tmp_path / "q" / "flip.png")
    crop = save_image(cropped(draw_image(32, (256, 224))), tmp_path / "q" / "crop.png")
    args = ("--model", "resnet50", "--no-pretrained", "--workers", "0", "--quiet", "--json")
    result = run_cli("index", photos, "--index", tmp_path / "i", *args)
    assert result.exit_code == 0, result.stderr
    assert result.json()["added"] == 3
    info = run_cli("info", "--index", tmp_path / "i", "--json").json()
    assert (info["model"], info["dim"], info["images"]) == ("resnet50", 2048, 3)
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    assert (manifest["preprocess"]["height"], manifest["preprocess"]["width"]) == (224, 224)
    found = run_cli(
        "search",
        os.fsdecode(query),
        os.fsdecode(crop),
        originals[0],
        "--index",
        tmp_path / "i",
        "-k",
        "3",
        "--format",
        "json",
    ).json()
    assert [r["results"][0]["path"] for r in found] == [
        str(originals[1]),
        str(originals[2]),
        str(originals[0]),
    ]
    assert found[2]["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert sys.modules.get("retrieval.cli") is not None
