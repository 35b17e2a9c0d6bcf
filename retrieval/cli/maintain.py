"""`retrieval info`, `check` and `optimize`: look after an existing index."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import defaults, printable
from .common import CONTEXT, index_option, notifier, parse_memory, read_only


@click.command("info", context_settings=CONTEXT)
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout (for programs).")
@read_only
def info_command(index_dir: str, as_json: bool) -> None:
    """Show what an index holds: images, failures, model, weights, dim, type, size.

    For people: one aligned "key: value" line each, nested values as dotted keys
    (index_params.nlist), sizes as 1.2 MB (N bytes). --json keeps numbers and nesting.

    \b
    Example:
      retrieval info --index indexes/photos --json
    """
    from .. import Index

    summary = Index(index_dir, notify=notifier(False)).info()
    if as_json:
        click.echo(json.dumps(summary))
        return
    for line in human_lines(summary):
        click.echo(line)


def human_lines(summary: dict[str, Any]) -> list[str]:
    """`summary` as right-aligned "key: value" lines, nested dicts flattened to dotted keys,
    byte counts (keys with a "bytes" word) also shown as sizes, text escaped for terminals."""
    pairs = list(_flatten(summary))
    width = max((len(key) for key, _ in pairs), default=0)
    return [f"{printable(key):>{width}}: {_human_value(key, value)}" for key, value in pairs]


def _flatten(summary: dict[str, Any], prefix: str = "") -> Any:
    for key, value in summary.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _human_value(key: str, value: Any) -> str:
    if value is None or value == {}:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and "bytes" in key.rsplit(".", 1)[-1].split("_"):
        return f"{human_size(value)} ({value} bytes)"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_human_value(key, item) for item in value) or "none"
    return printable(str(value))


def human_size(size: float) -> str:
    """Bytes as a decimal size for people: 999 B, 1.0 kB, 1.2 MB, 4.4 GB."""
    if abs(size) < 1000:
        return f"{size:.0f} B"
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if abs(size) < 1000 or unit == "TB":
            break
    return f"{size:.1f} {unit}"


@click.command("check", context_settings=CONTEXT)
@index_option
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
    from .. import Index

    report = Index(index_dir).check(repair=repair, wait=wait)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        for line in report.lines():
            click.echo(line)
    if not report.ok:
        sys.exit(1)


@click.command("optimize", context_settings=CONTEXT)
@index_option
@click.option(
    "--index-type",
    type=click.Choice(defaults.INDEX_TYPES),
    default="auto",
    show_default=True,
    help="Type to rebuild as; auto re-chooses for the current size and --memory.",
)
@click.option(
    "--memory",
    metavar="SIZE",
    default=None,
    callback=parse_memory,
    help="Memory budget for auto, e.g. 4G [default: the index's, else half the RAM].",
)
@click.option(
    "--target-recall",
    type=click.FloatRange(0, 1),
    default=defaults.TARGET_RECALL,
    show_default=True,
    help="Tune nprobe / efSearch to the smallest value reaching this recall@10.",
)
@click.option(
    "--queries",
    type=click.IntRange(min=1),
    default=defaults.RECALL_QUERIES,
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
    from .. import Index

    report = Index(index_dir, notify=notifier(False)).optimize(
        index_type=index_type,
        memory=memory,
        target_recall=target_recall,
        queries=queries,
        measure_only=measure,
        force=rebuild,
        wait=wait,
    )
    click.echo(json.dumps(report.to_dict()) if as_json else report.summary())
