"""`retrieval export` and `retrieval import`: embeddings to and from files for other tools."""

from __future__ import annotations

import json
import sys

import click

from .. import StorageOptions, defaults
from .common import CONTEXT, index_option, notifier, read_only, vector_options


@click.command("export", context_settings=CONTEXT)
@index_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(defaults.EXPORT_FORMATS),
    default="parquet",
    show_default=True,
    help="npy: a matrix + OUT.rows.json; parquet: one file with every column.",
)
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="The file to write (not inside an index folder); - for stdout (parquet only).",
)
@read_only
def export_command(index_dir: str, fmt: str, out: str) -> None:
    """Write every embedding, with its id and path, for other tools.

    npy writes OUT (an N x dim float32 matrix) and OUT.rows.json (row -> id, path);
    parquet writes one file with id, path, embedding and metadata columns. With -o -,
    parquet goes to stdout and the summary to stderr.

    \b
    Example:
      retrieval export --format parquet -o embeddings.parquet
      retrieval export --format npy -o embeddings.npy
      retrieval export -o - | ssh backup 'cat > photos.parquet'
    """
    from .. import Index, printable

    index = Index(index_dir, notify=notifier(False))
    if out == "-":
        if sys.stdout.isatty():  # binary parquet would garble (and drive) the terminal
            raise click.UsageError(
                "-o - writes binary parquet to stdout, which is a terminal; pipe it to a "
                "program, redirect it (> FILE), or give -o FILE"
            )
        report = index.export(sys.stdout.buffer, fmt)
        summary = f"exported {report.rows} embeddings ({report.dim}-d) to stdout"
        click.echo(f"retrieval: {summary}", err=True)
        return
    report = index.export(out, fmt)
    files = printable(", ".join(report.files))
    click.echo(f"exported {report.rows} embeddings ({report.dim}-d) to {files}")


@click.command("import", context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@index_option
@vector_options
@click.option("--wait", is_flag=True, help="Wait for another writer instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No notices on stderr.")
def import_command(
    files: tuple[str, ...],
    index_dir: str,
    storage: StorageOptions,
    wait: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Add embeddings from FILES written by `retrieval export` (.parquet, or .npy + .rows.json).

    A new index takes the files' model; an existing one refuses another model or dim.
    A stored path given again is replaced. No image files are needed.

    \b
    Example:
      retrieval export --index other -o other.parquet
      retrieval import other.parquet --index indexes/photos
    """
    from .. import Index

    index = Index(index_dir, notify=notifier(quiet))
    report = index.import_files(files, storage=storage, wait=wait)
    click.echo(json.dumps(report.to_dict()) if as_json else report.summary())
