"""Engines that decode and embed an indexing run's files beyond this process
(`ops.indexing.Engine`). Each engine's heavy dependency has one module, imported only when
the engine is chosen: `ray_engine` (Ray's tasks and actors)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .. import defaults
from ..errors import UsageError
from ..specs import EngineOptions

if TYPE_CHECKING:  # not imported at run time: a Ray worker loads this package too
    from ..ops.indexing import Engine, ModelRequest

#: How to get Ray, said when `--engine ray` is asked for without it.
RAY_INSTALL = "pip install 'retrieval[ray]' (or: pip install 'ray[client]>=2.40')"


def create(
    options: EngineOptions | None, device: str, precision: str, notify: Callable[[str], None]
) -> Engine | None:
    """The engine `options` asks for; None for the local one. Raises UsageError for an
    unknown engine, or when Ray is asked for and cannot be imported."""
    if options is None or options.kind == "local":
        return None
    if options.kind not in defaults.ENGINES:
        raise UsageError(
            f"unknown engine {options.kind!r}; use one of {', '.join(defaults.ENGINES)}"
        )
    if options.actors is not None and options.actors < 1:
        raise UsageError(f"--actors must be at least 1, not {options.actors}")
    try:
        from .ray_engine import RayEngine
    except ImportError as exc:
        if (exc.name or "").startswith("retrieval"):
            raise
        raise UsageError(
            f"--engine ray needs Ray, which cannot be imported here ({exc}); "
            f"install it: {RAY_INSTALL}"
        ) from None
    return RayEngine(options, device, precision, notify)


@contextlib.contextmanager
def running(engine: Engine | None, model: ModelRequest) -> Iterator[None]:
    """`engine` started, loading `model` on its workers (it gets ready in the background
    while the run scans and plans), and closed on every path, Ctrl-C included; nothing for
    the local engine (None)."""
    if engine is None:
        yield
        return
    engine.start(model)
    try:
        yield
    finally:
        engine.close()
