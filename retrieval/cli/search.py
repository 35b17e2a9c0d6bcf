"""`retrieval search`: the indexed images most like query images, with filters and formats."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from .. import defaults
from .common import CONTEXT, device_option, index_option, notifier, show


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
                help="Only this format, e.g. JPEG, PNG (repeatable).",
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
@click.option("-k", "k", type=click.IntRange(min=1), default=defaults.TOP_K, show_default=True)
@click.option("--min-score", type=float, default=None, help="Drop results below this cosine.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv", "paths"]),
    default="table",
    show_default=True,
)
@device_option
def search_command(
    images: tuple[str, ...],
    index_dir: str,
    k: int,
    min_score: float | None,
    fmt: str,
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

    --like PATH queries with an indexed image's stored vector instead (it is left out of
    its own results). Filters apply inside the search: k results whenever k images pass.

    \b
    Example:
      retrieval search data/queries/coffee_crop.jpg -k 3
      retrieval search a.jpg b.jpg --format json --min-score 0.6
      retrieval search --like ~/Pictures/cat.jpg --under ~/Pictures/2023 --min-width 1024
    """
    from ..api import Index
    from ..ops.searching import SearchFilter

    if not images and not like:
        raise click.UsageError("give query IMAGES, or --like PATH for an image already indexed")
    filters = SearchFilter(
        under=under,
        formats=image_formats,
        min_width=min_width,
        min_height=min_height,
        modified_after=modified_after.timestamp() if modified_after else None,
        modified_before=modified_before.timestamp() if modified_before else None,
    )
    results = Index(index_dir, notify=notifier(False)).search(
        images, like=like, filters=filters, k=k, min_score=min_score, device=device
    )
    _print_results(results, fmt)


def _print_results(results: list[Any], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps([r.to_dict() for r in results]))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["query", "rank", "score", "id", "path"])
        for r in results:
            for rank, hit in enumerate(r.results, 1):
                writer.writerow(
                    [show(os.fsencode(r.query)), rank, f"{hit.score:.6f}", hit.id, show(hit.path)]
                )
    elif fmt == "paths":
        out = sys.stdout.buffer
        for r in results:
            for hit in r.results:
                out.write(hit.path + b"\n")
        out.flush()
    else:
        for r in results:
            click.echo(show(os.fsencode(r.query)))  # a non-UTF-8 name: \xNN escapes
            if not r.results:
                click.echo("  (no results)")
            for rank, hit in enumerate(r.results, 1):
                click.echo(f"  {rank:>3}  {hit.score:6.3f}  {show(hit.path)}")
