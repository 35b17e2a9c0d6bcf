"""The `retrieval` command: parses options, calls `retrieval.api.Index`, prints the result.

Data goes to stdout, progress and notices to stderr. Exit codes: 0 success, 1 error,
2 usage error, 130 interrupted. No library code prints; nothing here touches torch,
FAISS or SQL (imports are deferred so `retrieval --help` stays fast).

One module per command family: index, search, exchange (export, import), maintain
(info, check, optimize), prune, bench, evaluate, weights (convert), dups, serve (starts
the web app, retrieval.web); common holds the shared options and output helpers.
"""

from __future__ import annotations

import os
import sys

import click

from .. import Interrupted, RetrievalError, __version__, printable
from .bench import bench_command
from .common import CONTEXT, group_index_option
from .dups import dups_command
from .evaluate import evaluate_command
from .exchange import export_command, import_command
from .index import index_command
from .maintain import check_command, info_command, optimize_command
from .prune import prune_command
from .search import search_command
from .serve import serve_command
from .weights import weights_group

__all__ = ["cli", "main"]


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="retrieval", help="Show the version.")
@group_index_option
def cli(index_dir: str | None) -> None:
    """Index folders of images and find the ones that look like an example image.

    \b
    Example:
      retrieval index ~/Pictures
      retrieval search holiday.jpg -k 5
      retrieval export --format parquet -o embeddings.parquet
      retrieval --index indexes/photos info
    """


cli.add_command(index_command)
cli.add_command(search_command)
cli.add_command(export_command)
cli.add_command(info_command)
cli.add_command(check_command)
cli.add_command(import_command)
cli.add_command(optimize_command)
cli.add_command(prune_command)
cli.add_command(bench_command)
cli.add_command(evaluate_command)
cli.add_command(weights_group)
cli.add_command(dups_command)
cli.add_command(serve_command)


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
        click.echo(f"retrieval: {printable(str(exc))}", err=True)
        sys.exit(130)
    except (KeyboardInterrupt, click.exceptions.Abort):
        resume = "finished work was kept; run the same command again to resume"
        click.echo(f"retrieval: interrupted: {resume}", err=True)
        sys.exit(130)
    except RetrievalError as exc:
        click.echo(f"error: {printable(str(exc))}", err=True)  # names in it: no terminal codes
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
