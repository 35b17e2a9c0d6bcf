"""Engines that decode and embed an indexing run's files beyond this process
(`ops.indexing.Engine`). Each engine's heavy dependency has one module, imported only when
the engine is chosen: `ray_engine` (Ray Data)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .. import defaults
from ..errors import UsageError
from ..specs import EngineOptions

if TYPE_CHECKING:  # not imported at run time: a Ray worker loads this package too
    from ..ops.indexing import Engine

#: How to get Ray, said when `--engine ray` is asked for without it.
RAY_INSTALL = "pip install 'retrieval[ray]' (or: pip install 'ray[data]>=2.40')"
#: Why a ray:// address is refused: Ray Data's executor needs a full driver (a core worker),
#: which a Ray Client does not have (tried with Ray 2.60: AttributeError 'core_worker').
RAY_CLIENT = (
    "--ray-address ray://... joins through the Ray Client, which cannot run Ray Data "
    "(ray-project/ray#42739); run `retrieval index` on a node of the cluster with "
    "--ray-address auto, or give the cluster's GCS address HOST:PORT (default port 6379)"
)


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
    if (options.address or "").startswith("ray://"):
        raise UsageError(RAY_CLIENT)
    try:
        from .ray_engine import RayEngine
    except ImportError as exc:
        if (exc.name or "").startswith("retrieval"):
            raise
        raise UsageError(
            f"--engine ray needs Ray Data, which cannot be imported here ({exc}); "
            f"install it: {RAY_INSTALL}"
        ) from None
    return RayEngine(options, device, precision, notify)


@contextlib.contextmanager
def running(engine: Engine | None) -> Iterator[None]:
    """`engine` started (it gets ready in the background while the run scans and plans)
    and closed on every path, Ctrl-C included; nothing for the local engine (None)."""
    if engine is None:
        yield
        return
    engine.start()
    try:
        yield
    finally:
        engine.close()
