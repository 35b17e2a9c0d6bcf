"""`retrieval evaluate`: retrieval quality on labelled folders (and known duplicates)."""

from __future__ import annotations

import json
import os

import click

from .. import defaults
from .common import (
    CONTEXT,
    Progress,
    device_option,
    model_options,
    notifier,
    precision_option,
    read_only,
    workers_option,
)


@click.command("evaluate", context_settings=CONTEXT)
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@model_options("default")
@click.option(
    "-k",
    "--k",
    "k",
    type=click.IntRange(min=1),
    default=defaults.TOP_K,
    show_default=True,
    help="Rank cut-off of mAP@k, precision@k and recall@k.",
)
@click.option(
    "--duplicates",
    type=click.Path(exists=True, dir_okay=False),
    metavar="TRUTH.json",
    help='Ground-truth duplicates, imagededup\'s format: {"cats/a.jpg": ["cats/a2.jpg"]}, '
    "names relative to DIRECTORY; adds pair precision/recall/F1 and a threshold sweep.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True),
    default=defaults.DUPS_THRESHOLD,
    show_default=True,
    help="Cosine similarity at which two images count as duplicates (as in `dups`).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    metavar="PR.png",
    help="With --duplicates: draw the precision-recall curve (needs retrieval[plot]).",
)
@workers_option
@device_option
@precision_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or notices.")
@read_only
def evaluate_command(
    directory: str,
    model: str | None,
    weights: str | None,
    no_pretrained: bool,
    k: int,
    duplicates: str | None,
    threshold: float,
    plot: str | None,
    workers: int | None,
    device: str,
    precision: str,
    as_json: bool,
    quiet: bool,
) -> None:
    """Measure how well a model retrieves the labelled images under DIRECTORY, in which
    each first-level subfolder is a class. Nothing is indexed or written.

    Every image is a query against all the others (exact cosine search, itself left out);
    the others of its class are the relevant items. For a query with R relevant items and
    its top L = min(k, images - 1): precision@k = hits / L, recall@k = hits / R, AP@k = the
    sum of precision@i at each relevant rank i <= L, divided by min(k, R). Means per class
    and over all queries (mAP@k is the mean AP@k; macro: the mean over classes). An image
    alone in its class has no relevant item: it is left out of the means and counted.
    Unreadable images are listed and left out.

    \b
    Example:
      retrieval evaluate photos_by_class/
      retrieval evaluate photos_by_class/ --model tf_efficientnet_lite0 \\
          --weights lite0.safetensors --k 5 --json
      retrieval evaluate shots/ --duplicates truth.json --plot pr.png
    """
    from .. import WeightsSpec, evaluate

    if weights and no_pretrained:
        raise click.UsageError("--weights and --no-pretrained exclude each other")
    spec = None
    if weights:
        spec = WeightsSpec("file", path=os.path.abspath(weights))
    elif no_pretrained:
        spec = WeightsSpec("untrained", identity=str(defaults.UNTRAINED_SEED))
    with Progress(quiet) as progress:
        report = evaluate(
            directory,
            model=model,
            weights=spec,
            device=device,
            precision=precision,
            k=k,
            duplicates=duplicates,
            threshold=threshold,
            plot=plot,
            workers=workers,
            notify=notifier(quiet),
            progress=progress,
        )
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    for line in report.lines():
        click.echo(line)
