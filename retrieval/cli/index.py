"""`retrieval index`: embed the images under folders into an index."""

from __future__ import annotations

import json
import os

import click

from .. import EngineOptions, StorageOptions, defaults
from .common import (
    CONTEXT,
    Progress,
    device_option,
    index_option,
    max_megapixels_option,
    model_options,
    notifier,
    precision_option,
    show,
    vector_options,
    workers_option,
)


@click.command("index", context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=False, type=click.Path())
@index_option
@model_options("new index")
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Skip files and folders matching GLOB: a name at any depth ('*.png', 'thumbnails'), "
    "or with '/' a path under PATH ('raw/2023'; '*/x/*' at any depth). Repeatable.",
)
@click.option("--follow-symlinks", is_flag=True, help="Follow symbolic links (loop-safe).")
@max_megapixels_option("Refuse larger images.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Images per forward pass and per transaction [default: 32 on CPU, 256 on CUDA].",
)
@workers_option
@device_option
@precision_option
@vector_options
@click.option(
    "--engine",
    type=click.Choice(defaults.ENGINES),
    default="local",
    show_default=True,
    help="Where files are decoded and embedded: here, or on Ray (pip install 'retrieval[ray]'); "
    "the index is written here either way.",
)
@click.option(
    "--ray-address",
    metavar="ADDR",
    default=None,
    help="With --engine ray: join this cluster ('auto', its GCS address HOST:6379, or "
    "ray://HOST:10001 through the Ray Client) [default: start Ray on this machine].",
)
@click.option(
    "--actors",
    type=click.IntRange(min=1),
    default=None,
    help="With --engine ray: embedding actors [default: one per GPU, else 1].",
)
@click.option(
    "--shards",
    metavar="DIR",
    type=click.Path(file_okay=False),
    default=None,
    help="With --engine ray: write the embedded images to DIR (new or empty) as "
    "clip-retrieval shards, for `retrieval import DIR` elsewhere, not into this index.",
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
    batch_size: int | None,
    workers: int | None,
    device: str,
    precision: str,
    storage: StorageOptions,
    engine: str,
    ray_address: str | None,
    actors: int | None,
    shards: str | None,
    wait: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Index (or update) the images under PATHS: folders, recursively, or single files.

    Unchanged files are skipped, changed ones re-embedded, vanished ones removed and
    moved ones re-pointed. Unreadable images are listed as failures; the run goes on.
    The index remembers its PATHS: with none, it re-scans every one still on disk.

    \b
    Example:
      retrieval index ~/Pictures --exclude '*/thumbnails/*'
      retrieval index data/photos --no-pretrained     # offline, untrained backbone
      retrieval index                                 # re-scan the folders indexed before
      retrieval index /archive --index-type auto --memory 4G --vector-dtype float16
      retrieval index /archive --dim 256              # 256-d PCA search cache
      retrieval index /archive --engine ray --ray-address auto   # embed on a Ray cluster
    """
    from .. import Index, IndexOptions, WeightsSpec

    if weights and no_pretrained:
        raise click.UsageError("--weights and --no-pretrained exclude each other")
    if engine != "ray" and (ray_address or actors or shards):
        raise click.UsageError("--ray-address, --actors and --shards need --engine ray")
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
    with Progress(quiet) as progress:
        report = Index(index_dir, notify=notifier(quiet)).add(
            paths,
            model=model,
            weights=spec,
            device=device,
            precision=precision,
            options=options,
            wait=wait,
            progress=progress,
            storage=storage,
            engine=EngineOptions(
                engine,
                address=ray_address,
                actors=actors,
                shards=os.path.abspath(shards) if shards else None,
            ),
        )
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    click.echo(report.summary())
    for path, error in report.failed[:50]:
        click.echo(f"  failed: {show(path)}: {error}")
    if len(report.failed) > 50:
        click.echo(f"  ... and {len(report.failed) - 50} more (use --json for all)")
