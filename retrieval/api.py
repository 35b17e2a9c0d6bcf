"""The library API: everything the CLI does, as methods of `Index`.

>>> from retrieval import Index
>>> index = Index("indexes/photos")
>>> report = index.add(["~/Pictures"])                    # embed, incrementally
>>> [q.results[0].path for q in index.search(["query.jpg"], k=5)]
>>> index.export("photos.parquet", "parquet")
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__, defaults
from .errors import IndexIncompatible, IndexNotFound
from .ops import exchange, indexing, searching
from .ops.indexing import IndexOptions, IndexReport, Progress
from .ops.searching import QueryResult
from .specs import WeightsSpec
from .store.index_dir import IndexDir, index_summary
from .store.manifest import Manifest, check_model

Notify = Callable[[str], None]


class Index:
    """An index directory (default: $RETRIEVAL_INDEX or indexes/default).

    `notify` receives one-line notices (device used, files repaired) meant for stderr.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, notify: Notify | None = None
    ):
        self.directory = os.path.abspath(os.fspath(directory or defaults.default_index_dir()))
        self._notify = notify or (lambda message: None)

    # -- writing ----------------------------------------------------------------------------

    def add(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        model: str | None = None,
        weights: WeightsSpec | None = None,
        device: str = "auto",
        precision: str = "auto",
        options: IndexOptions | None = None,
        wait: bool = False,
        progress: Progress | None = None,
    ) -> IndexReport:
        """Index `paths` (folders or files): add new, update changed, drop vanished files.

        A new index uses `model` (default resnet50) with `weights` (default: pretrained);
        an existing one must be asked for the same or nothing. Raises RetrievalError.
        """
        from .embedding.embedder import load_embedder

        # The model is loaded before anything is written, so a model error leaves no
        # half-made index behind.
        manifest = self._existing_manifest()
        if manifest is not None:
            check_model(manifest, model, weights, self.directory)
            embedder = load_embedder(manifest.model.name, manifest.model.weights, device, precision)
            self._check_same_weights(manifest, embedder.info.weights)
        else:
            embedder = load_embedder(
                model or defaults.MODEL, weights or WeightsSpec("pretrained"), device, precision
            )
        with IndexDir.open_writer(self.directory, wait=wait) as index_dir:
            self._flush_notices(index_dir)
            if index_dir.manifest is None:
                index_dir.set_manifest(
                    Manifest(
                        model=embedder.info, precision=embedder.precision, created_with=_versions()
                    )
                )
            elif manifest is None or index_dir.manifest.model != manifest.model:
                # another process created or rebuilt the index meanwhile
                check_model(
                    index_dir.manifest, embedder.info.name, embedder.info.weights, self.directory
                )
            self._notify(f"embedding with {embedder.info.name} on {embedder.describe()}")
            try:
                return indexing.index_paths(
                    index_dir, embedder, paths, options or IndexOptions(), progress
                )
            finally:
                self._flush_notices(index_dir)

    # -- reading ----------------------------------------------------------------------------

    def search(
        self,
        images: Sequence[str | os.PathLike[str]],
        *,
        k: int = defaults.TOP_K,
        min_score: float | None = None,
        device: str = "auto",
        max_megapixels: float = defaults.MAX_MEGAPIXELS,
    ) -> list[QueryResult]:
        """The k indexed images nearest to each query image, best first."""
        with self._open() as index_dir:
            manifest = index_dir.require_manifest()
            from .embedding.embedder import load_embedder, resolve_device

            resolved = resolve_device(device)
            precision = manifest.precision
            if resolved == "cpu" and precision == "fp16":
                precision = "fp32"
            embedder = load_embedder(
                manifest.model.name, manifest.model.weights, resolved, precision
            )
            self._check_same_weights(manifest, embedder.info.weights)
            xq = searching.embed_queries(embedder, images, max_megapixels)
            names = [os.fspath(image) for image in images]
            results = searching.search_vectors(index_dir, xq, names, k, min_score)
            self._flush_notices(index_dir)
            return results

    def search_vectors(
        self, xq: Any, *, k: int = defaults.TOP_K, names: Sequence[str] | None = None
    ) -> list[QueryResult]:
        """Neighbours of ready-made query vectors `xq` (n, dim) float32, L2-normalised."""
        with self._open() as index_dir:
            labels = list(names) if names is not None else [str(i) for i in range(len(xq))]
            return searching.search_vectors(index_dir, xq, labels, k)

    def export(self, out: str | os.PathLike[str], fmt: str = "parquet") -> exchange.ExportReport:
        """Write every stored embedding to `out` ('npy' + sidecar, or 'parquet')."""
        with self._open() as index_dir:
            return exchange.export(index_dir, os.fspath(out), fmt)

    def info(self) -> dict[str, Any]:
        """Counts, model, weights, dim, index type, bytes on disk."""
        with self._open() as index_dir:
            summary = index_summary(index_dir)
            self._flush_notices(index_dir)
            return summary

    def manifest(self) -> Manifest:
        with self._open() as index_dir:
            return index_dir.require_manifest()

    # -- helpers ----------------------------------------------------------------------------

    def _existing_manifest(self) -> Manifest | None:
        if not os.path.isfile(os.path.join(self.directory, defaults.CATALOG_FILE)):
            return None
        try:
            with self._open() as index_dir:
                return index_dir.manifest
        except IndexNotFound:
            return None

    def _open(self) -> IndexDir:
        return IndexDir.open(self.directory)

    def _flush_notices(self, index_dir: IndexDir) -> None:
        for notice in index_dir.notices:
            self._notify(notice)
        index_dir.notices.clear()

    def _check_same_weights(self, manifest: Manifest, loaded: WeightsSpec) -> None:
        expected = manifest.model.weights
        if expected.source == "pretrained" and expected.identity != loaded.identity:
            raise IndexIncompatible(
                f"the index was built with pretrained weights {expected.identity}, but the "
                f"cache now holds {loaded.identity}; rebuild the index with "
                f"`retrieval index --index NEW_DIR FOLDER` to use the new weights"
            )


def _versions() -> dict[str, str]:
    import timm
    import torch

    return {
        "retrieval": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }
