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


def _precision_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--precision",
        type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
        default="auto",
        show_default=True,
        help="auto: bf16 where the hardware has it natively, else fp32.",
    )(func)


def _parse_memory(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from .ops.ann import parse_size

    try:
        return None if value is None else parse_size(value)
    except RetrievalError as exc:
        raise click.BadParameter(str(exc)) from None


def _vector_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--index-type, --memory, --vector-dtype: how vectors are stored and searched."""
    func = click.option(
        "--vector-dtype",
        type=click.Choice(["float32", "float16"]),
        default=None,
        help="Vector storage of a new index; float16 halves memory [new index: float32].",
    )(func)
    func = click.option(
        "--memory",
        metavar="SIZE",
        default=None,
        callback=_parse_memory,
        help="Memory budget for the vector index, e.g. 4G, used by auto [default: half the RAM].",
    )(func)
    return click.option(
        "--index-type",
        type=click.Choice(["auto", "flat", "hnsw", "ivf", "ivfpq"]),
        default=None,
        help="Vector index: auto picks from the number of vectors, the dim and --memory "
        "[new index: auto].",
    )(func)


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
    default=None,
    help="Images per forward pass and per transaction [default: 32 on CPU, 256 on CUDA].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Decode processes (0: decode in the main process) [default: by cores and device].",
)
@_device_option
@_precision_option
@_vector_options
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
    batch_size: int | None,
    workers: int | None,
    device: str,
    precision: str,
    index_type: str | None,
    memory: int | None,
    vector_dtype: str | None,
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
      retrieval index /archive --index-type auto --memory 4G --vector-dtype float16
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
            index_type=index_type,
            memory=memory,
            vector_dtype=vector_dtype,
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
@click.argument("images", nargs=-1, type=click.Path())
@click.option(
    "--like",
    multiple=True,
    metavar="PATH",
    help="Query with the stored vector of an indexed image (repeatable; no model is loaded).",
)
@_filter_options
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
    from .api import Index
    from .ops.searching import SearchFilter

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
    results = Index(index_dir, notify=_notifier(False)).search(
        images, like=like, filters=filters, k=k, min_score=min_score, device=device
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


@cli.command("check", context_settings=CONTEXT)
@_index_option
@click.option(
    "--repair", is_flag=True, help="Rebuild vectors.faiss / manifest.json, delete temp files."
)
@click.option("--wait", is_flag=True, help="Wait for a running writer instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def check_command(index_dir: str, repair: bool, wait: bool, as_json: bool) -> None:
    """Verify an index: SQLite integrity, manifest, vector index, leftover temporary files.

    The vector index must hold exactly the stored vectors. With --repair, everything that
    derives from the catalogue is rebuilt from it. Exits 1 while problems remain.

    \b
    Example:
      retrieval check --index indexes/photos
      retrieval check --index indexes/photos --repair --json
    """
    from .api import Index

    report = Index(index_dir).check(repair=repair, wait=wait)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        for line in report.lines():
            click.echo(line)
    if not report.ok:
        sys.exit(1)


@cli.command("import", context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@_index_option
@_vector_options
@click.option("--wait", is_flag=True, help="Wait for another writer instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def import_command(
    files: tuple[str, ...],
    index_dir: str,
    index_type: str | None,
    memory: int | None,
    vector_dtype: str | None,
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
    from .api import Index

    report = Index(index_dir, notify=_notifier(False)).import_files(
        files, index_type=index_type, memory=memory, vector_dtype=vector_dtype, wait=wait
    )
    click.echo(json.dumps(report.to_dict()) if as_json else report.summary())


@cli.command("optimize", context_settings=CONTEXT)
@_index_option
@click.option(
    "--index-type",
    type=click.Choice(["auto", "flat", "hnsw", "ivf", "ivfpq"]),
    default="auto",
    show_default=True,
    help="Type to rebuild as; auto re-chooses for the current size and --memory.",
)
@click.option(
    "--memory",
    metavar="SIZE",
    default=None,
    callback=_parse_memory,
    help="Memory budget for auto, e.g. 4G [default: the index's, else half the RAM].",
)
@click.option(
    "--target-recall",
    type=click.FloatRange(0, 1),
    default=0.95,
    show_default=True,
    help="Tune nprobe / efSearch to the smallest value reaching this recall@10.",
)
@click.option(
    "--queries",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Stored vectors used as recall queries.",
)
@click.option("--measure", is_flag=True, help="Only measure recall@10; change nothing.")
@click.option("--rebuild", is_flag=True, help="Rebuild even if the choice is what it holds.")
@click.option("--wait", is_flag=True, help="Wait for another writer instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def optimize_command(
    index_dir: str,
    index_type: str,
    memory: int | None,
    target_recall: float,
    queries: int,
    measure: bool,
    rebuild: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Re-choose the vector index for the collection's size, tune it, report recall@10.

    The index is rebuilt when the choice differs from what it holds; nprobe (IVF) or
    efSearch (HNSW) is then tuned to the smallest value reaching --target-recall. Recall
    is measured against exact search on a sample of stored vectors, with the time per
    query of both (batched).

    \b
    Example:
      retrieval optimize --index indexes/photos --memory 4G
      retrieval optimize --measure --json
    """
    from .api import Index

    report = Index(index_dir, notify=_notifier(False)).optimize(
        index_type=index_type,
        memory=memory,
        target_recall=target_recall,
        queries=queries,
        measure_only=measure,
        force=rebuild,
        wait=wait,
    )
    click.echo(json.dumps(report.to_dict()) if as_json else report.summary())


@cli.command("bench", context_settings=CONTEXT)
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--model", default=defaults.MODEL, show_default=True, help="timm model name.")
@_device_option
@_precision_option
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Images per forward pass [default: 32 on CPU, 256 on CUDA].",
)
@click.option("--workers", type=click.IntRange(min=0), help="Decode processes [default: auto].")
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads [default: auto].")
@click.option(
    "--images",
    type=click.IntRange(min=1),
    default=48,
    show_default=True,
    help="Images to generate (no FOLDER), or the most files of FOLDER to use.",
)
@click.option(
    "--mix",
    type=click.Choice(["photos", "small"]),
    default="photos",
    show_default=True,
    help="Generated images: 2-24 MP JPEGs with small PNGs, or small images only.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Times each stage runs; the report gives medians.",
)
@click.option("--no-naive", is_flag=True, help="Skip the naive baseline (the slowest stage).")
@click.option(
    "--search-size",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Vectors in the synthetic search index (0: skip the search timing).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def bench_command(
    folder: str | None,
    model: str,
    device: str,
    precision: str,
    batch_size: int | None,
    workers: int | None,
    threads: int | None,
    images: int,
    mix: str,
    rounds: int,
    no_naive: bool,
    search_size: int,
    as_json: bool,
) -> None:
    """Measure decode, model-only, end-to-end and naive images/s, search time and memory.

    Without FOLDER, generates camera-sized JPEGs (2-24 MP) mixed with small PNGs. The
    model is untrained (speed does not depend on weights), so nothing is downloaded.
    Stages are interleaved over --rounds and reported as medians.

    \b
    Example:
      retrieval bench                                  # resnet50, generated photos
      retrieval bench ~/Pictures --images 200 --json
      retrieval bench --model test_resnet --mix small --images 200 --no-naive
    """
    from .ops.bench import BenchOptions, run_bench

    options = BenchOptions(
        model=model,
        device=device,
        precision=precision,
        batch_size=batch_size,
        workers=workers,
        threads=threads,
        images=images,
        mix=mix,
        rounds=rounds,
        naive=not no_naive,
        search_size=search_size,
    )
    report = run_bench(folder, options, notify=_notifier(as_json))
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    for line in report.lines():
        click.echo(line)


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
                writer.writerow(
                    [_show(os.fsencode(r.query)), rank, f"{hit.score:.6f}", hit.id, _show(hit.path)]
                )
    elif fmt == "paths":
        out = sys.stdout.buffer
        for r in results:
            for hit in r.results:
                out.write(hit.path + b"\n")
        out.flush()
    else:
        for r in results:
            click.echo(_show(os.fsencode(r.query)))  # a non-UTF-8 name: \xNN escapes
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
        resume = "finished work was kept; run the same command again to resume"
        click.echo(f"retrieval: interrupted: {resume}", err=True)
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
