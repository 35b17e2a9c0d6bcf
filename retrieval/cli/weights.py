"""`retrieval weights convert`: rename another implementation's state dict onto a timm model."""

from __future__ import annotations

import json

import click

from .common import CONTEXT


@click.group("weights", context_settings=CONTEXT)
def weights_group() -> None:
    """Prepare weights files for --weights.

    \b
    Example:
      retrieval weights convert efficientnet-lite0.pth --model tf_efficientnet_lite0 \\
          -o lite0.safetensors
    """


@weights_group.command("convert", context_settings=CONTEXT)
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", required=True, help="timm model name the weights are for.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="The .safetensors file to write (replaced atomically if it exists).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def convert_command(source: str, model: str, output: str, as_json: bool) -> None:
    """Rename the tensors of SOURCE (a .pth/.pt state dict saved by another implementation
    of the same architecture) to timm's key names, in order, and write them as a
    .safetensors file that `--model NAME --weights OUT` loads.

    The file's tensors must pair up one-to-one, in order and shape, with the model's (its
    classifier included, or the backbone alone for a headless file); otherwise nothing is
    written and the first mismatch is named.

    \b
    Example:
      retrieval weights convert efficientnet-lite0.pth --model tf_efficientnet_lite0 \\
          -o lite0.safetensors
      retrieval index photos --model tf_efficientnet_lite0 --weights lite0.safetensors
    """
    from .. import convert_weights

    report = convert_weights(source, model, output)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    for line in report.lines():
        click.echo(line)
