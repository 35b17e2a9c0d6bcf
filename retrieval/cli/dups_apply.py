"""The acting half of `retrieval dups`: `--apply --move-to DIR [--journal FILE]` and
`--undo JOURNAL`, as options and two runners that `cli/dups.py` wires in (see
`apply_options`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from .common import notifier


def apply_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds `apply`, `move_to`, `journal`, `undo` and `wait` to a command's parameters."""
    options = [
        click.option(
            "--apply",
            "apply",
            is_flag=True,
            help="Move every image not kept into --move-to DIR (journalled; --undo puts them "
            "back). Without it nothing changes.",
        ),
        click.option(
            "--move-to",
            metavar="DIR",
            type=click.Path(file_okay=False),
            help="With --apply: where the moved images go, keeping their paths relative to "
            "their indexed root (absolute paths under DIR for images under no root). Must "
            "lie outside every indexed root and the index folder.",
        ),
        click.option(
            "--journal",
            metavar="FILE",
            type=click.Path(dir_okay=False),
            help="With --apply: write the journal here [default: "
            "DIR/retrieval-dups-<UTC time>.journal]; never overwritten.",
        ),
        click.option(
            "--undo",
            metavar="JOURNAL",
            type=click.Path(dir_okay=False),
            help="Put back what an --apply moved, from its journal (safe to repeat).",
        ),
        click.option("--wait", is_flag=True, help="With --apply/--undo: wait for another writer."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def check_apply_options(
    apply: bool, move_to: str | None, journal: str | None, undo: str | None
) -> None:
    """Usage errors (exit 2) for option combinations that cannot be meant."""
    if undo and (apply or move_to or journal):
        raise click.UsageError(
            "--undo JOURNAL takes no --apply, --move-to or --journal: it puts back what that "
            "journal's --apply moved"
        )
    if apply and not move_to:
        raise click.UsageError("--apply needs --move-to DIR: images are moved aside, never deleted")
    if (move_to or journal) and not apply:
        raise click.UsageError(
            "--move-to and --journal act only with --apply; add --apply to move the images "
            "(nothing was changed)"
        )


def run_apply(
    index: Any, report: Any, move_to: str, journal: str | None, wait: bool, as_json: bool
) -> None:
    """Move the non-keepers of a `DupsReport` and print what moved (JSON or lines); exits 1
    (an `error:` line) when some file could not be moved."""
    applied = index.apply_dups(report, move_to, journal=journal, wait=wait)
    _show(applied, as_json)


def run_undo(index_dir: str | None, journal: str, wait: bool, as_json: bool, quiet: bool) -> None:
    """`--undo JOURNAL`: put the files back and print the outcome; exits 1 when some file
    could not be put back."""
    from .. import Index

    undone = Index(index_dir, notify=notifier(quiet)).undo_dups(journal, wait=wait)
    _show(undone, as_json)


def _show(applied: Any, as_json: bool) -> None:
    from .. import RetrievalError

    if as_json:
        click.echo(json.dumps(applied.to_dict()))
    else:
        for line in applied.lines():
            click.echo(line)
    if applied.failed:
        what = "put back" if applied.undo else "moved"
        raise RetrievalError(
            f"{len(applied.failed)} file(s) could not be {what} (listed above with the reason); "
            "the others were"
        )
