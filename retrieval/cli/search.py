"""`retrieval search`: the indexed images most like query images, with filters and formats."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from .. import defaults, printable
from .common import (
    CONTEXT,
    device_option,
    index_option,
    max_megapixels_option,
    notifier,
    read_only,
    show,
)


def _filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Result filters for search; every condition given must hold."""
    dates = click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"])
    for option in reversed(
        [
            click.option(
                "--under", multiple=True, metavar="DIR", help="Only images under DIR (repeatable)."
            ),
            click.option(
                "--image-format",
                "image_formats",
                multiple=True,
                metavar="FMT",
                help="Only this format: JPEG, PNG, ... or an extension such as jpg, tif "
                "(any case; repeatable).",
            ),
            click.option(
                "--min-width", type=click.IntRange(min=1), help="Only this wide or wider."
            ),
            click.option(
                "--min-height", type=click.IntRange(min=1), help="Only this tall or taller."
            ),
            click.option(
                "--modified-after",
                type=dates,
                metavar="DATE",
                help="Only files modified on/after DATE.",
            ),
            click.option(
                "--modified-before",
                type=dates,
                metavar="DATE",
                help="Only files modified before DATE.",
            ),
        ]
    ):
        func = option(func)
    return func


def _cosine(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not -1.0 <= value <= 1.0:  # NaN too
        raise click.BadParameter(f"{value} is not a cosine: scores lie between -1 and 1.")
    return value


@click.command("search", context_settings=CONTEXT)
@click.argument("images", nargs=-1, type=click.Path())
@click.option(
    "--like",
    multiple=True,
    metavar="PATH",
    help="Query with the stored vector of an indexed image (repeatable; no model is loaded).",
)
@_filter_options
@index_option
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=defaults.TOP_K,
    show_default=True,
    help="Results per query, best first (at most the number of indexed images).",
)
@click.option(
    "--min-score",
    type=float,
    default=None,
    callback=_cosine,
    metavar="COSINE",
    help="Drop results scoring below this cosine (-1 to 1) [default: keep all k].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv", "paths", "html"]),
    default=None,
    help="table for people; json, csv (names escaped as in table) or paths (one per line, "
    "an empty line between queries) for programs; html: one page with thumbnails, readable "
    "offline, to share [default: table, paths with -0].",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="With --format html: write the page here, not to stdout.",
)
@click.option(
    "-0",
    "--null",
    is_flag=True,
    help="With paths: end each path with NUL instead of a newline (for xargs -0), an extra "
    "NUL between queries; names are written exactly.",
)
@max_megapixels_option("Refuse larger query images.")
@device_option
@read_only
def search_command(
    images: tuple[str, ...],
    index_dir: str,
    k: int,
    min_score: float | None,
    fmt: str | None,
    output: str | None,
    null: bool,
    max_megapixels: float,
    device: str,
    like: tuple[str, ...],
    under: tuple[str, ...],
    image_formats: tuple[str, ...],
    min_width: int | None,
    min_height: int | None,
    modified_after: Any,
    modified_before: Any,
) -> None:
    """Find the indexed images most similar to each IMAGE (cosine score, best first).

    An IMAGE of - reads one image from stdin. --like PATH queries with an indexed image's stored
    vector instead (it is left out of its own results). Filters apply inside the search:
    k results whenever k images pass. A query that cannot be used gets an error line (or
    JSON "error") and the others are still searched; the exit status is then 1.

    \b
    Example:
      retrieval search data/queries/coffee_crop.jpg -k 3
      retrieval search a.jpg b.jpg --format json --min-score 0.6
      retrieval search a.jpg --format html -o results.html
      retrieval search --like ~/Pictures/cat.jpg --under ~/Pictures/2023 --min-width 1024
      curl -sL https://example.com/cat.jpg | retrieval search - -0 | xargs -0 ls -l
    """
    from .. import Index, SearchFilter

    if not images and not like:
        raise click.UsageError("give query IMAGES, or --like PATH for an image already indexed")
    if null and fmt not in (None, "paths"):
        raise click.UsageError("-0/--null only goes with --format paths")
    if output is not None and fmt != "html":
        raise click.UsageError("-o/--output goes with --format html; redirect the others: > FILE")
    filters = SearchFilter(
        under=under,
        formats=image_formats,
        min_width=min_width,
        min_height=min_height,
        modified_after=modified_after.timestamp() if modified_after else None,
        modified_before=modified_before.timestamp() if modified_before else None,
    )
    index = Index(index_dir, notify=notifier(False))
    if output is not None:
        index.check_output(output)
    results = index.search(
        _with_stdin(images),
        like=like,
        filters=filters,
        k=k,
        min_score=min_score,
        device=device,
        max_megapixels=max_megapixels,
    )
    if fmt == "html":
        _write_page(index.gallery(results, max_megapixels=max_megapixels), output)
    else:
        _print_results(results, fmt or ("paths" if null else "table"), null)
    for result in results:
        if result.error is not None:
            click.echo(f"error: {printable(result.error)}", err=True)
    if any(result.error is not None for result in results):
        sys.exit(1)


def _with_stdin(images: tuple[str, ...]) -> list[Any]:
    """The query images, `-` replaced by a stream over stdin."""
    from .. import QueryStream

    if images.count("-") > 1:
        raise click.UsageError("give - (stdin) at most once: it holds one image")
    if "-" in images and sys.stdin.isatty():
        raise click.UsageError(
            "- reads the query image from stdin, which is a terminal; pipe an image in, "
            "e.g. curl -sL URL | retrieval search -"
        )
    return [QueryStream(sys.stdin.buffer, "-") if image == "-" else image for image in images]


def _write_page(page: str, output: str | None) -> None:
    if output is None:
        click.echo(page, nl=False)
        return
    with open(output, "w", encoding="utf-8") as fh:
        fh.write(page)


def _print_results(results: list[Any], fmt: str, null: bool) -> None:
    if fmt == "json":
        click.echo(json.dumps([r.to_dict() for r in results]))
    elif fmt == "csv":
        _print_csv(results)
    elif fmt == "paths":
        _print_paths(results, b"\0" if null else b"\n")
    else:
        for r in results:
            click.echo(printable(r.query))
            if r.error is not None:
                click.echo(f"  error: {printable(r.error)}")
            elif not r.results:
                click.echo("  (no results)")
            for rank, hit in enumerate(r.results, 1):
                click.echo(f"  {rank:>3}  {hit.score:6.3f}  {show(hit.path)}")


def _print_csv(results: list[Any]) -> None:
    """One row per hit, one per failed query; names escaped as in the table (csv files get
    opened in terminals; json and paths -0 carry names exactly)."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["query", "rank", "score", "id", "path", "error"])
    for r in results:
        query = printable(r.query)
        if r.error is not None:
            writer.writerow([query, "", "", "", "", printable(r.error)])
        for rank, hit in enumerate(r.results, 1):
            writer.writerow([query, rank, f"{hit.score:.6f}", hit.id, show(hit.path), ""])


def _print_paths(results: list[Any], end: bytes) -> None:
    """Each hit's path followed by `end`; an empty record (`end` alone) between queries.

    Names are raw bytes, except on a terminal (escaped, as in the table); with newline ends
    a name holding a newline cannot be told apart, so it is skipped with a notice."""
    out = sys.stdout.buffer
    terminal = sys.stdout.isatty()
    notify = notifier(False)
    for n, r in enumerate(results):
        if n:
            out.write(end)
        for hit in r.results:
            if terminal:
                out.write(show(hit.path).encode("utf-8") + end)
            elif end in hit.path:
                notify(f"skipped {show(hit.path)}: its name holds a newline; use -0 to "
                       "separate paths with NUL")  # fmt: skip
            else:
                out.write(hit.path + end)
    out.flush()
