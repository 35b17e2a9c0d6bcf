"""What the commands share: option decorators, notices, the progress bar, path display.

Everything printed for people goes through `show` (names) or `printable` (any text), which
escape the control characters a terminal would act on; JSON and `-0` output carry names
exactly.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from .. import Interrupted, RetrievalError, StorageOptions, defaults, display, printable

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _resolve_index(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The command's own --index, else the group's (`retrieval --index DIR search ...`),
    else None: the library then locates the index (see `retrieval.locate`)."""
    if value is not None:
        return value
    root = ctx.find_root()
    if root is not ctx and root.params.get("index_dir") is not None:
        return str(root.params["index_dir"])
    return None


def index_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--index",
        "index_dir",
        default=None,
        metavar="DIR",
        callback=_resolve_index,
        type=click.Path(file_okay=False),
        help=f"Index directory [default: the --index given before the command, else "
        f"${defaults.INDEX_ENV}, else the nearest {defaults.INDEX_DIR} found walking up "
        "from here, else the per-user one; `retrieval info` says which].",
    )(func)


def group_index_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--index on the group, for every command; a command's own --index wins."""
    return click.option(
        "--index",
        "index_dir",
        default=None,
        type=click.Path(file_okay=False),
        help="Index directory for the command (a command's own --index wins) [default: "
        f"${defaults.INDEX_ENV}, else the nearest {defaults.INDEX_DIR} found walking up].",
    )(func)


def read_only(func: Callable[..., Any]) -> Callable[..., Any]:
    """Ctrl-C in a command that writes nothing: say just "interrupted" (exit 130), not the
    writers' "run the same command again to resume"."""

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None

    return command


def model_options(default_note: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--model, --weights, --no-pretrained; `default_note` says when --model's default
    applies (e.g. "new index")."""

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option(
            "--no-pretrained",
            is_flag=True,
            help="Untrained backbone with a fixed seed (offline demos).",
        )(func)
        func = click.option(
            "--weights",
            type=click.Path(exists=True, dir_okay=False),
            help="Local weights file (.safetensors, .pth, .pt) for --model.",
        )(func)
        return click.option(
            "--model", default=None, help=f"timm model name [{default_note}: {defaults.MODEL}]."
        )(func)

    return wrap


def workers_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--workers",
        type=click.IntRange(min=0),
        default=None,
        help="Decode processes (0: decode in the main process) [default: by cores and device].",
    )(func)


def max_megapixels_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--max-megapixels` (> 0, default `defaults.MAX_MEGAPIXELS`), with the command's `help`."""
    return click.option(
        "--max-megapixels",
        type=click.FloatRange(min=0, min_open=True),
        default=defaults.MAX_MEGAPIXELS,
        show_default=True,
        help=help,
    )


def device_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--device",
        type=click.Choice(defaults.DEVICES),
        default="auto",
        show_default=True,
        help="Where the model runs; auto picks cuda when torch sees a GPU.",
    )(func)


def precision_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--precision",
        type=click.Choice(defaults.PRECISIONS),
        default="auto",
        show_default=True,
        help="auto: $RETRIEVAL_PRECISION when set, else bf16 where the hardware has it "
        "natively, else fp32.",
    )(func)


def parse_memory(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from .. import parse_size

    try:
        return None if value is None else parse_size(value)
    except RetrievalError as exc:
        raise click.BadParameter(str(exc)) from None


#: The options `vector_options` adds, gathered into the command's `storage` argument.
STORAGE_OPTIONS = ("index_type", "memory", "vector_dtype", "dim", "whiten", "rerank", "vectors")


def vector_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--index-type, --memory, --vector-dtype, --dim, --whiten, --rerank: how vectors are
    stored and searched. The command receives them as one `StorageOptions`, `storage`, for
    `Index.add` / `Index.import_files`."""

    command = func

    @functools.wraps(command)
    def gathered(*args: Any, **kwargs: Any) -> Any:
        kwargs["storage"] = StorageOptions(**{name: kwargs.pop(name) for name in STORAGE_OPTIONS})
        return command(*args, **kwargs)

    func = gathered
    func = click.option(
        "--vectors",
        metavar="faiss|milvus:URI",
        default=None,
        help="New index: keep the search index in vectors.faiss, or in a Milvus collection "
        "(a Milvus Lite file ending in .db, or http://HOST:19530) [faiss].",
    )(func)
    func = click.option(
        "--rerank",
        type=click.IntRange(min=0),
        default=None,
        metavar="N",
        help="Fetch N x k candidates and re-score them with the full stored vectors; 0: off "
        "[default: 32 for IVF-PQ, 8 for --dim, else 0].",
    )(func)
    func = click.option(
        "--whiten/--no-whiten",
        default=None,
        help="With --dim: whiten the PCA components [default: no; in our benchmark whitening "
        "lowered recall@10 against exact search].",
    )(func)
    func = click.option(
        "--dim",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="New index: search a PCA reduction of the vectors to N dimensions, learned once "
        "the index holds max(1000, 10N) vectors; the full vectors stay stored.",
    )(func)
    func = click.option(
        "--vector-dtype",
        type=click.Choice(defaults.VECTOR_DTYPES),
        default=None,
        help="Vector storage of a new index; float16 halves memory [new index: float32].",
    )(func)
    func = click.option(
        "--memory",
        metavar="SIZE",
        default=None,
        callback=parse_memory,
        help="Memory budget for the vector index, e.g. 4G, used by auto [default: half the RAM].",
    )(func)
    return click.option(
        "--index-type",
        type=click.Choice(defaults.INDEX_TYPES),
        default=None,
        help="Vector index: auto picks from the number of vectors, the dim and --memory "
        "[new index: auto].",
    )(func)


def show(path: bytes) -> str:
    """A stored path for people: non-UTF-8 bytes and control characters escaped."""
    return display(path)


def notifier(quiet: bool) -> Callable[[str], None]:
    def notify(message: str) -> None:
        if not quiet:
            click.echo(f"retrieval: {printable(message)}", err=True)

    return notify


class Progress:
    """A tqdm bar on stderr, shown only on a terminal; called as progress(done, total)."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.bar: Any = None

    def __enter__(self) -> Progress:
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
