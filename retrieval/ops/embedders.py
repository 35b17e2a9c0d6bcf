"""Getting the model an index needs: loaded for its manifest (weights checked), loaded only
when first used, with torch's threads set to this machine's plan.

torch is imported only inside these functions (through `embedding`), so a run that embeds
nothing never pays for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..embedding.threads import kept as kept_torch_threads
from ..errors import IndexIncompatible
from ..specs import Preprocess, WeightsSpec
from ..store.manifest import Manifest

if TYPE_CHECKING:  # not at run time: Ray's embedding actors import this module
    from .indexing import IndexOptions

__all__ = [
    "LazyEmbedder",
    "configure_threads",
    "kept_torch_threads",
    "load",
    "load_for",
    "resolve_device",
]

Notify = Callable[[str], None]


def load(model: str, weights: WeightsSpec, device: str, precision: str) -> Any:
    """A new `embedding.embedder.Embedder` for `model` with `weights` (fetched if need be)."""
    from ..embedding.embedder import load_embedder

    return load_embedder(model, weights, device, precision)


def load_for(manifest: Manifest, device: str, precision: str) -> Any:
    """The model `manifest` was built with; raises IndexIncompatible when the cached
    pretrained weights are no longer the ones the index recorded."""
    embedder = load(manifest.model.name, manifest.model.weights, device, precision)
    expected, loaded = manifest.model.weights, embedder.info.weights
    if expected.source == "pretrained" and expected.identity != loaded.identity:
        raise IndexIncompatible(
            f"the index was built with pretrained weights {expected.identity}, but the "
            f"cache now holds {loaded.identity}; rebuild the index with "
            f"`retrieval index --index NEW_DIR FOLDER` to use the new weights"
        )
    return embedder


def configure_threads(device: str, options: IndexOptions | None) -> None:
    """Set torch's threads to this machine's plan (see `pipeline.plan_resources`)."""
    from ..embedding.embedder import configure_threads as set_threads
    from . import pipeline

    workers = options.workers if options is not None else None
    set_threads(pipeline.plan_resources(device, workers).threads)


def resolve_device(device: str) -> str:
    """`embedder.resolve_device`, without importing torch (seconds) where Linux shows no GPU."""
    gpu_nodes = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd")
    if device == "auto" and sys.platform == "linux" and not any(map(os.path.exists, gpu_nodes)):
        return "cpu"
    from ..embedding.embedder import resolve_device as resolve

    return resolve(device)


class LazyEmbedder:
    """An embedder whose model is created on the first `embed`.

    `preprocess` is known from the manifest; `device` only needs torch, not the model.
    """

    def __init__(
        self, preprocess: Preprocess, device: Callable[[], str], load: Callable[[], Any]
    ) -> None:
        self.preprocess = preprocess
        self._device = device
        self._load = load
        self._resolved: str | None = None
        self._embedder: Any = None

    @property
    def device(self) -> str:
        if self._resolved is None:
            self._resolved = self._device()
        return self._resolved

    def embed(self, pixels: Any) -> Any:
        if self._embedder is None:
            self._embedder = self._load()
        return self._embedder.embed(pixels)
