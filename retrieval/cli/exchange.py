"""`retrieval export` and `retrieval import`: embeddings to and from files for other tools."""

from __future__ import annotations

import json
from typing import Any

import click

from .common import CONTEXT, index_option, notifier, vector_options


@click.command("export", context_settings=CONTEXT)
@index_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["npy", "parquet"]),
    default="parquet",
    show_default=True,
)
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False))
def export_command(index_dir: str, fmt: str, out: str) -> None:
    """Write every embedding, with its id and path, for other tools.

    npy writes OUT (an N x dim float32 matrix) and OUT.rows.json (row -> id, path);
    parquet writes one file with id, path, embedding and metadata columns.

    \b
    Example:
      retrieval export --format parquet -o embeddings.parquet
      retrieval export --format npy -o embeddings.npy
    """
    from ..api import Index

    report = Index(index_dir, notify=notifier(False)).export(out, fmt)
    click.echo(f"exported {report.rows} embeddings ({report.dim}-d) to {', '.join(report.files)}")


@click.command("import", context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@index_option
@vector_options
@click.option("--wait", is_flag=True, help="Wait for another writer instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def import_command(
    files: tuple[str, ...],
    index_dir: str,
    storage: dict[str, Any],
    wait: bool,
    as_json: bool,
) -> None:
    """Add embeddings from FILES written by `retrieval export` (.parquet, or .npy + .rows.json).

    A new index takes the files' model; an existing one refuses another model or dim.
    A stored path given again is replaced. No image files are needed.

    \b
    Example:
      retrieval export --index other -o other.parquet
      retrieval import other.parquet --index indexes/photos
    """
    from ..api import Index

    report = Index(index_dir, notify=notifier(False)).import_files(files, wait=wait, **storage)
    click.echo(json.dumps(report.to_dict()) if as_json else report.summary())
