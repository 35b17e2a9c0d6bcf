"""The `retrieval` command: parses options, calls `retrieval.api.Index`, prints the result.

Data goes to stdout, progress and notices to stderr. Exit codes: 0 success, 1 error,
2 usage error, 130 interrupted. No library code prints; nothing here touches torch,
FAISS or SQL (imports are deferred so `retrieval --help` stays fast).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from . import __version__, defaults
from .errors import Interrupted, RetrievalError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _index_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--index",
        "index_dir",
        envvar=defaults.INDEX_ENV,
        default=defaults.INDEX_DIR,
        show_default=True,
        type=click.Path(file_okay=False),
        help=f"Index directory (env {defaults.INDEX_ENV}).",
    )(func)


def _device_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where the model runs; auto picks cuda when torch sees a GPU.",
    )(func)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="retrieval")
def cli() -> None:
    """Index folders of images and find the ones that look like an example image.

    \b
    Example:
      retrieval index ~/Pictures
      retrieval search holiday.jpg -k 5
      retrieval export --format parquet -o embeddings.parquet
    """


@cli.command("index", context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_index_option
@click.option("--model", default=None, help=f"timm model name [new index: {defaults.MODEL}].")
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    help="Local weights file (.safetensors, .pth, .pt) for --model.",
)
@click.option(
    "--no-pretrained", is_flag=True, help="Untrained backbone with a fixed seed (offline demos)."
)
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip matching names (repeatable).")
@click.option("--follow-symlinks", is_flag=True, help="Follow symbolic links (loop-safe).")
@click.option(
    "--max-megapixels",
    type=click.FloatRange(min=0, min_open=True),
    default=defaults.MAX_MEGAPIXELS,
    show_default=True,
    help="Refuse larger images.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=defaults.BATCH_SIZE,
    show_default=True,
    help="Images per forward pass and per transaction.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Decode processes (0: decode in the main process) [default: cores - 1].",
)
@_device_option
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="auto: bf16 where the hardware has it natively, else fp32.",
)
@click.option("--wait", is_flag=True, help="Wait for another writer instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or notices.")
def index_command(
    paths: tuple[str, ...],
    index_dir: str,
    model: str | None,
    weights: str | None,
    no_pretrained: bool,
    exclude: tuple[str, ...],
    follow_symlinks: bool,
    max_megapixels: float,
    batch_size: int,
    workers: int | None,
    device: str,
    precision: str,
    wait: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Index (or update) the images under PATHS: folders, recursively, or single files.

    Unchanged files are skipped, changed ones re-embedded, vanished ones removed and
    moved ones re-pointed. Unreadable images are listed as failures; the run goes on.

    \b
    Example:
      retrieval index ~/Pictures --exclude '*/thumbnails/*'
      retrieval index data/photos --no-pretrained     # offline, untrained backbone
    """
    from .api import Index
    from .ops.indexing import IndexOptions
    from .specs import WeightsSpec

    if weights and no_pretrained:
        raise click.UsageError("--weights and --no-pretrained exclude each other")
    spec = None
    if weights:
        spec = WeightsSpec("file", path=os.path.abspath(weights))
    elif no_pretrained:
        spec = WeightsSpec("untrained", identity=str(defaults.UNTRAINED_SEED))
    options = IndexOptions(
        exclude=exclude,
        follow_symlinks=follow_symlinks,
        max_megapixels=max_megapixels,
        batch_size=batch_size,
        workers=workers,
    )
    with _Progress(quiet) as progress:
        report = Index(index_dir, notify=_notifier(quiet)).add(
            paths,
            model=model,
            weights=spec,
            device=device,
            precision=precision,
            options=options,
            wait=wait,
            progress=progress,
        )
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    click.echo(report.summary())
    for path, error in report.failed[:50]:
        click.echo(f"  failed: {_show(path)}: {error}")
    if len(report.failed) > 50:
        click.echo(f"  ... and {len(report.failed) - 50} more (use --json for all)")


@cli.command("search", context_settings=CONTEXT)
@click.argument("images", nargs=-1, required=True, type=click.Path())
@_index_option
@click.option("-k", "k", type=click.IntRange(min=1), default=defaults.TOP_K, show_default=True)
@click.option("--min-score", type=float, default=None, help="Drop results below this cosine.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv", "paths"]),
    default="table",
    show_default=True,
)
@_device_option
def search_command(
    images: tuple[str, ...],
    index_dir: str,
    k: int,
    min_score: float | None,
    fmt: str,
    device: str,
) -> None:
    """Find the indexed images most similar to each IMAGE (cosine score, best first).

    \b
    Example:
      retrieval search data/queries/coffee_crop.jpg -k 3
      retrieval search a.jpg b.jpg --format json --min-score 0.6
    """
    from .api import Index

    results = Index(index_dir, notify=_notifier(False)).search(
        images, k=k, min_score=min_score, device=device
    )
    _print_results(results, fmt)


@cli.command("export", context_settings=CONTEXT)
@_index_option
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
    from .api import Index

    report = Index(index_dir, notify=_notifier(False)).export(out, fmt)
    click.echo(f"exported {report.rows} embeddings ({report.dim}-d) to {', '.join(report.files)}")


@cli.command("info", context_settings=CONTEXT)
@_index_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def info_command(index_dir: str, as_json: bool) -> None:
    """Show what an index holds: images, failures, model, weights, dim, type, size.

    \b
    Example:
      retrieval info --index indexes/photos --json
    """
    from .api import Index

    summary = Index(index_dir, notify=_notifier(False)).info()
    if as_json:
        click.echo(json.dumps(summary))
        return
    for key, value in summary.items():
        click.echo(f"{key:>18}: {value}")


# -- output helpers -------------------------------------------------------------------------


def _show(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


def _print_results(results: list[Any], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps([r.to_dict() for r in results]))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["query", "rank", "score", "id", "path"])
        for r in results:
            for rank, hit in enumerate(r.results, 1):
                writer.writerow([r.query, rank, f"{hit.score:.6f}", hit.id, _show(hit.path)])
    elif fmt == "paths":
        out = sys.stdout.buffer
        for r in results:
            for hit in r.results:
                out.write(hit.path + b"\n")
        out.flush()
    else:
        for r in results:
            click.echo(f"{r.query}")
            if not r.results:
                click.echo("  (no results)")
            for rank, hit in enumerate(r.results, 1):
                click.echo(f"  {rank:>3}  {hit.score:6.3f}  {_show(hit.path)}")


def _notifier(quiet: bool) -> Callable[[str], None]:
    def notify(message: str) -> None:
        if not quiet:
            click.echo(f"retrieval: {message}", err=True)

    return notify


class _Progress:
    """A tqdm bar on stderr, shown only on a terminal; called as progress(done, total)."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.bar: Any = None

    def __enter__(self) -> _Progress:
        return self

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True)
        self.bar.n = done
        self.bar.refresh()

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every failure into one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="retrieval", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        click.echo(f"retrieval: {exc}", err=True)
        sys.exit(130)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("retrieval: interrupted", err=True)
        sys.exit(130)
    except RetrievalError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except BrokenPipeError:
        sys.stderr.close()  # `retrieval search ... | head`: not an error
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - a bug: one line, traceback on request
        if os.environ.get("RETRIEVAL_DEBUG"):
            raise
        click.echo(
            f"internal error: {type(exc).__name__}: {exc} "
            "(set RETRIEVAL_DEBUG=1 for the traceback, and please report it)",
            err=True,
        )
        sys.exit(1)
    sys.exit(0)
