"""`retrieval dups`: groups of near-duplicate images, with the one to keep in each."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import click

from .. import defaults
from .common import CONTEXT, Progress, index_option, max_megapixels_option, notifier, read_only
from .dups_apply import apply_options, check_apply_options, run_apply, run_undo

_RULES = [name for name, _ in defaults.KEEP_RULES]
_RULES_HELP = "; ".join(f"{name}: {what}" for name, what in defaults.KEEP_RULES)


def _parse_keep(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    rules = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [rule for rule in rules if rule not in _RULES]
    if unknown or not rules:
        what = f"unknown keep rule {unknown[0]!r}" if unknown else "no keep rule given"
        raise click.BadParameter(
            f"{what}; the rules are: {', '.join(_RULES)} (e.g. --keep pixels,bytes,oldest,path)"
        )
    return rules


@click.command("dups", context_settings=CONTEXT)
@index_option
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=defaults.DUPS_THRESHOLD,
    show_default=True,
    help="Cosine at or above which two images are near-duplicates, in (0, 1].",
)
@click.option(
    "--under",
    multiple=True,
    metavar="DIR",
    type=click.Path(),
    help="Only groups holding an image under DIR (repeatable).",
)
@click.option(
    "--keep",
    default=",".join(defaults.DUPS_KEEP),
    show_default=True,
    callback=_parse_keep,
    help=f"Which member to keep: rules in order, comma-separated ({_RULES_HELP}).",
)
@click.option(
    "--reference",
    multiple=True,
    metavar="DIR",
    type=click.Path(),
    help="Images under DIR are always kept (repeatable); a group holding some keeps them all.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv", "html"]),
    default="table",
    show_default=True,
    help="table for people; json, csv (one row per member) or html (one file with previews).",
)
@max_megapixels_option("html: no preview for images above this size (as `index` refuses them).")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here, not stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or notices on stderr.")
@apply_options
@read_only
def dups_command(
    index_dir: str,
    threshold: float,
    under: tuple[str, ...],
    keep: tuple[str, ...],
    reference: tuple[str, ...],
    fmt: str,
    max_megapixels: float,
    as_json: bool,
    output: str | None,
    quiet: bool,
    apply: bool,
    move_to: str | None,
    journal: str | None,
    undo: str | None,
    wait: bool,
) -> None:
    """Find groups of near-duplicate images among those indexed, and suggest which to keep.

    Two images are near-duplicates when the cosine of their embeddings is at least
    --threshold; a group is every image linked by such pairs (so A~B and B~C make one group
    even when A and C are further apart: its "min similarity" shows it). Each group lists
    the image to keep first (the --keep rules, or the --reference images), then the others
    with their cosine to it. Nothing is changed unless --apply: then every image not kept is
    moved into --move-to DIR (paths kept relative to their indexed root; nothing is deleted),
    a journal is written first, the index follows the files, and --undo JOURNAL puts them
    back.

    \b
    Example:
      retrieval dups
      retrieval dups --threshold 0.97 --under ~/Pictures/2023 --format csv -o dups.csv
      retrieval dups --reference ~/Pictures/originals --format html -o dups.html
      retrieval dups --apply --move-to ~/dups-attic
      retrieval dups --undo ~/dups-attic/retrieval-dups-20261201T131500Z.journal
    """
    from .. import Index, dups_csv_rows

    fmt = "json" if as_json else fmt
    check_apply_options(apply, move_to, journal, undo)
    if undo:
        run_undo(index_dir, undo, wait, fmt == "json", quiet)
        return
    index = Index(index_dir, notify=notifier(quiet))
    if output is not None:
        index.check_output(output)
    with Progress(quiet) as progress:
        report = index.dups(
            threshold=threshold, under=under, keep=keep, reference=reference, progress=progress
        )
    if apply and output is None:  # stdout says what moved; with -o the groups go there too
        run_apply(index, report, move_to, journal, wait, fmt == "json")
        return
    if fmt == "json":
        text = json.dumps(report.to_dict()) + "\n"
    elif fmt == "csv":
        text = _csv(dups_csv_rows(report))
    elif fmt == "html":
        with Progress(quiet) as progress:
            text = index.gallery(report, max_megapixels=max_megapixels, progress=progress)
    else:
        text = "\n".join(report.lines()) + "\n"
    _write(text, output)
    if output and not quiet:
        click.echo(report.summary(), err=True)
    if apply:
        run_apply(index, report, move_to, journal, wait, fmt == "json")


def _csv(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _write(text: str, output: str | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    with open(output, "w", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(text)
