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
    default=None,
    help="npy: a matrix + OUT.rows.json; parquet: one file with every column.  "
    "[default: npy for -o *.npy, else parquet]",
)
@click.option(
    "--layout",
    type=click.Choice(defaults.EXPORT_LAYOUTS),
    default="default",
    show_default=True,
    help="clip-retrieval: -o is a folder of img_emb/*.npy + metadata/*.parquet shards "
    "(what autofaiss, embedding-reader and clip-retrieval read).",
)
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=defaults.LAYOUT_SHARD_SIZE,
    show_default=True,
    help="Rows per shard (--layout clip-retrieval).",
)
@click.option(
    "--dtype",
    type=click.Choice(defaults.LAYOUT_DTYPES),
    default="float32",
    show_default=True,
    help="Values in the .npy shards (--layout clip-retrieval).",
)
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(allow_dash=True),
    help="The file to write (not inside an index folder); - for stdout (parquet only); "
    "a new or empty folder with --layout clip-retrieval.",
)
@read_only
def export_command(
    index_dir: str, fmt: str | None, layout: str, shard_size: int, dtype: str, out: str
) -> None:
    """Write every embedding, with its id and path, for other tools.

    npy writes OUT (an N x dim float32 matrix) and OUT.rows.json (row -> id, path);
    parquet writes one file with id, path, embedding and metadata columns. With -o -,
    parquet goes to stdout and the summary to stderr. --layout clip-retrieval writes the
    folder OUT: img_emb/img_emb_K.npy shards, row-aligned metadata/metadata_K.parquet
    (image_path, id, size, mtime_ns, width, height, format, content_hash as hex) and
    manifest.json, written last.

    \b
    Example:
      retrieval export --format parquet -o embeddings.parquet
      retrieval export --format npy -o embeddings.npy
      retrieval export -o - | ssh backup 'cat > photos.parquet'
      retrieval export --layout clip-retrieval --dtype float16 -o embeddings/
    """
    from .. import Index, LayoutOptions, printable

    index = Index(index_dir, notify=notifier(False))
    if layout != "default":
        if out == "-":
            raise click.UsageError("--layout clip-retrieval writes a folder; give -o FOLDER")
        if fmt is not None:
            raise click.UsageError(
                f"--format does not go with --layout {layout} (its shards are .npy files with "
                "parquet metadata beside them); leave out --format"
            )
        report = index.export(out, "parquet", LayoutOptions(layout, shard_size, dtype))
        click.echo(
            f"exported {report.rows} embeddings ({report.dim}-d, {dtype}) in {report.shards} "
            f"shard(s) to {printable(report.files[0])}"
        )
        return
    fmt = fmt or ("npy" if out.lower().endswith(".npy") else "parquet")
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
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@index_option
@vector_options
@click.option(
    "--manifest",
    "manifest_file",
    type=click.Path(exists=True, dir_okay=False),
    help="The manifest for parquet files another tool rewrote (they lose theirs): an index's "
    "or a layout's manifest.json, or an npy export's .rows.json.",
)
@click.option("--wait", is_flag=True, help="Wait for another writer instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No notices on stderr.")
def import_command(
    files: tuple[str, ...],
    index_dir: str,
    storage: StorageOptions,
    manifest_file: str | None,
    wait: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Add embeddings from FILES written by `retrieval export`: .parquet, .npy + .rows.json,
    or a folder in the clip-retrieval layout (img_emb/, metadata/, manifest.json).

    A new index takes the files' model; an existing one refuses another model or dim.
    A stored path given again is replaced. No image files are needed. A parquet file that
    pandas, polars, DuckDB or datasets rewrote has lost its manifest: give --manifest, or
    import it into an existing index (its manifest is used after a dimension check).

    \b
    Example:
      retrieval export --index other -o other.parquet
      retrieval import other.parquet --index indexes/photos
      retrieval import embeddings/ --index indexes/photos
      retrieval import rewritten.parquet --manifest embeddings/manifest.json --index new
    """
    from .. import Index

    index = Index(index_dir, notify=notifier(quiet))
    report = index.import_files(files, storage=storage, wait=wait, manifest=manifest_file)
    click.echo(json.dumps(report.to_dict()) if as_json else report.summary())
