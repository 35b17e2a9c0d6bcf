"""`retrieval bench`: images/s, search time and memory on generated or given images."""

from __future__ import annotations

import json

import click

from .. import defaults
from .common import CONTEXT, device_option, notifier, precision_option


@click.command("bench", context_settings=CONTEXT)
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--model", default=defaults.MODEL, show_default=True, help="timm model name.")
@device_option
@precision_option
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
    default=defaults.BENCH_IMAGES,
    show_default=True,
    help="Images to generate (no FOLDER), or the most files of FOLDER to use.",
)
@click.option(
    "--mix",
    type=click.Choice(defaults.BENCH_MIXES),
    default=defaults.BENCH_MIXES[0],
    show_default=True,
    help="Generated images: photos (2-24 MP JPEGs, some small PNGs), png (wallpapers up to "
    "5120x2880 and clip art, 2.3 MP mean: decode-heavy), or small images only.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=defaults.BENCH_ROUNDS,
    show_default=True,
    help="Times each stage runs; the report gives medians.",
)
@click.option(
    "--no-plain",
    is_flag=True,
    help="Skip the plain-loop baseline and the `retrieval index` process beside it.",
)
@click.option(
    "--search-size",
    type=click.IntRange(min=0),
    default=defaults.BENCH_SEARCH_SIZE,
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
    no_plain: bool,
    search_size: int,
    as_json: bool,
) -> None:
    """Measure each stage's images/s and core-ms per image, search time and memory.

    The first line is end-to-end indexing as a share of this machine's limit, cores /
    (decode + model core-seconds per image). Beside it: a plain sequential loop and
    `retrieval index` run as a process on the same files. Without FOLDER, generates
    images (--mix). The model is untrained (speed does not depend on weights), so nothing
    is downloaded. Stages are interleaved over --rounds and reported as medians.

    \b
    Example:
      retrieval bench                                  # resnet50, generated photos
      retrieval bench --mix png --images 96            # decode-heavy PNG mix
      retrieval bench ~/Pictures --images 200 --json
      retrieval bench --model test_resnet --mix small --images 200 --no-plain
    """
    from .. import BenchOptions, run_bench

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
        plain=not no_plain,
        search_size=search_size,
    )
    report = run_bench(folder, options, notify=notifier(as_json))
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    for line in report.lines():
        click.echo(line)
