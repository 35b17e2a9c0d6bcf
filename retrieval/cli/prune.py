"""`retrieval prune`: forget images and roots that are gone from disk."""

from __future__ import annotations

import json

import click

from .common import CONTEXT, index_option, notifier


@click.command("prune", context_settings=CONTEXT)
@index_option
@click.option(
    "--root",
    "roots",
    multiple=True,
    metavar="DIR",
    type=click.Path(),
    help="Forget this root and remove every image under it, on disk or not (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; change nothing.")
@click.option("--wait", is_flag=True, help="Wait for another writer instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def prune_command(
    index_dir: str, roots: tuple[str, ...], dry_run: bool, wait: bool, as_json: bool
) -> None:
    """Remove indexed images whose files no longer exist, and forget roots that are gone.

    `retrieval index` keeps the images of a folder it cannot find (an unplugged drive looks
    like a deleted folder); prune is how they leave. With --root DIR, that root is forgotten
    and every image under it removed, whether its files exist or not.

    \b
    Example:
      retrieval prune --dry-run
      retrieval prune
      retrieval prune --root /mnt/old-drive/photos
    """
    from .. import Index

    report = Index(index_dir, notify=notifier(False)).prune(roots, dry_run=dry_run, wait=wait)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    for line in report.lines():
        click.echo(line)
