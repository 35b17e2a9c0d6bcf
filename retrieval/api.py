"""The library API: everything the CLI does, as methods of `Index`.

>>> from retrieval import Index
>>> index = Index("indexes/photos")
>>> report = index.add(["~/Pictures"])                    # embed, incrementally
>>> [q.results[0].path for q in index.search(["query.jpg"], k=5)]
>>> index.export("photos.parquet", "parquet")
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from . import __version__, defaults
from .errors import IndexIncompatible, IndexNotFound, UsageError
from .ops import ann, checking, exchange, importing, indexing, searching
from .ops.indexing import IndexOptions, IndexReport, Progress
from .ops.searching import QueryResult, SearchFilter
from .specs import Preprocess, WeightsSpec
from .store.index_dir import IndexDir, index_summary
from .store.manifest import Manifest, check_model

Notify = Callable[[str], None]


def _keeps_torch_threads(method: Callable[..., Any]) -> Callable[..., Any]:
    """Give torch back, on return, the intra-op thread count it had before the call.

    Indexing sets torch's (process-wide) thread count to this machine's plan; a program that
    calls the library keeps its own setting afterwards. (If torch was first imported by the
    call, the plan stays: there was no setting to keep.)
    """

    @functools.wraps(method)
    def kept(*args: Any, **kwargs: Any) -> Any:
        torch = sys.modules.get("torch")
        before = torch.get_num_threads() if torch is not None else None
        try:
            return method(*args, **kwargs)
        finally:
            if torch is not None and before is not None:
                torch.set_num_threads(before)

    return kept


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

    @_keeps_torch_threads
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
        index_type: str | None = None,
        memory: int | None = None,
        vector_dtype: str | None = None,
        dim: int | None = None,
        whiten: bool | None = None,
        rerank: int | None = None,
    ) -> IndexReport:
        """Index `paths` (folders or files): add new, update changed, drop vanished files.

        A new index uses `model` (default resnet50) with `weights` (default: pretrained);
        an existing one must be asked for the same or nothing. `index_type` (auto, flat,
        hnsw, ivf, ivfpq; a new index: auto), `memory` (bytes, for auto) and `vector_dtype`
        (float32 or float16, new indexes only) set how vectors are stored and searched;
        `dim` (new indexes only) keeps a PCA reduction of them in the search cache: plain PCA
        unless `whiten=True` (opt-in, as `--whiten`: whitening lowered recall@10 in our
        benchmark), and `rerank` re-scores that many candidates per result with the full
        vectors. Raises RetrievalError.
        """
        reduce: dict[str, Any] = {"dim": dim, "whiten": whiten, "rerank": rerank}
        from .sources.scan import check_roots

        check_roots(paths)  # a mistyped folder must not leave a new, empty index behind
        # The model is loaded before anything is written, so a model error leaves no
        # half-made index behind.
        manifest = self._existing_manifest()
        embedder: Any
        if manifest is not None:
            check_model(manifest, model, weights, self.directory)
            # Loaded on the first file that needs embedding: an unchanged tree never pays.
            embedder = _LazyEmbedder(
                manifest.model.preprocess,
                lambda: _resolve_device(device),
                lambda: self._load_for(manifest, device, precision, options),
            )
        else:
            from .embedding.embedder import load_embedder

            embedder = load_embedder(
                model or defaults.MODEL, weights or WeightsSpec("pretrained"), device, precision
            )
            _configure_threads(embedder.device, options)
            self._notify(f"embedding with {embedder.info.name} on {embedder.describe()}")
        with IndexDir.open_writer(self.directory, wait=wait) as index_dir:
            self._flush_notices(index_dir)
            wanted = manifest.model if manifest is not None else embedder.info
            if index_dir.manifest is None:
                new = manifest or Manifest(
                    model=embedder.info, precision=embedder.precision, created_with=_versions()
                )
                index_dir.set_manifest(
                    ann.configure(
                        new, self.directory, index_type, memory, vector_dtype, True, **reduce
                    )
                )
            elif index_dir.manifest.model != wanted:
                # another process created or rebuilt the index meanwhile
                check_model(index_dir.manifest, wanted.name, wanted.weights, self.directory)
            current = index_dir.require_manifest()
            configured = ann.configure(
                current, self.directory, index_type, memory, vector_dtype, **reduce
            )
            if configured != current:
                index_dir.set_manifest(configured)
            try:
                return indexing.index_paths(
                    index_dir, embedder, paths, options or IndexOptions(), progress
                )
            finally:
                self._flush_notices(index_dir)

    def import_files(
        self,
        files: Sequence[str | os.PathLike[str]],
        *,
        index_type: str | None = None,
        memory: int | None = None,
        vector_dtype: str | None = None,
        wait: bool = False,
        dim: int | None = None,
        whiten: bool | None = None,
        rerank: int | None = None,
    ) -> importing.ImportReport:
        """Add the embeddings of `export` files (.parquet, or .npy + .rows.json).

        A new index takes the files' model metadata; an existing one refuses files from
        another model, weights or dimension (IndexIncompatible). Every row of every file is
        checked before anything is written (ImportFormatError names the file, row and rule),
        and a new index that fails while it is written is removed. The options are `add`'s
        (`dim`: a PCA reduction, plain PCA unless `whiten=True`).
        """

        def configure(manifest: Manifest, new: bool) -> Manifest:
            if new:
                manifest = replace(manifest, created_with=_versions(), index_policy={})
            return ann.configure(
                manifest,
                self.directory,
                index_type,
                memory,
                vector_dtype,
                new,
                dim=dim,
                whiten=whiten,
                rerank=rerank,
            )

        sources = importing.read_files([os.fspath(f) for f in files], self.directory)
        with IndexDir.open_writer(self.directory, wait=wait) as index_dir:
            self._flush_notices(index_dir)
            try:
                return importing.import_files(index_dir, sources, configure)
            finally:
                self._flush_notices(index_dir)

    def optimize(
        self,
        *,
        index_type: str = "auto",
        memory: int | None = None,
        target_recall: float = ann.TARGET_RECALL,
        queries: int = ann.RECALL_QUERIES,
        measure_only: bool = False,
        force: bool = False,
        wait: bool = False,
    ) -> ann.OptimizeReport:
        """Re-choose the vector index for the collection's size (rebuilt if the choice differs,
        or with `force`), tune its search knobs to reach `target_recall`, and measure
        recall@10 against exact search.

        `measure_only` changes nothing and takes no lock.
        """
        if measure_only:
            opened = self._open()
        else:
            opened = IndexDir.open_writer(self.directory, wait=wait)
        with opened as index_dir:
            try:
                return ann.optimize(
                    index_dir,
                    index_type,
                    memory,
                    target_recall,
                    queries,
                    measure_only=measure_only,
                    force=force,
                )
            finally:
                self._flush_notices(index_dir)

    # -- reading ----------------------------------------------------------------------------

    def search(
        self,
        images: Sequence[str | os.PathLike[str]] = (),
        *,
        like: Sequence[str | os.PathLike[str]] = (),
        filters: SearchFilter | None = None,
        k: int = defaults.TOP_K,
        min_score: float | None = None,
        device: str = "auto",
        max_megapixels: float = defaults.MAX_MEGAPIXELS,
    ) -> list[QueryResult]:
        """The k indexed images nearest to each query, best first, in one batched search.

        Queries are image files (`images`, embedded with the index's model) and images
        already indexed (`like`: their stored vectors, no model is loaded for them; a `like`
        query leaves itself out of its results). `filters` restricts the results.
        """
        if not images:
            return self._search_like(like, filters, k, min_score)
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
            own = [-1] * len(images)
            if like:
                xl, ids = searching.like_vectors(index_dir, like)
                xq = np.concatenate([xq, xl])
                names += [os.fspath(path) for path in like]
                own += ids.tolist()
            results = searching.search_vectors(
                index_dir, xq, names, k, min_score, filters, own if like else None
            )
            self._flush_notices(index_dir)
            return results

    def _search_like(
        self,
        like: Sequence[str | os.PathLike[str]],
        filters: SearchFilter | None,
        k: int,
        min_score: float | None,
    ) -> list[QueryResult]:
        if not like:
            raise UsageError("give query IMAGES, or --like PATH for an image already indexed")
        with self._open() as index_dir:
            xq, own = searching.like_vectors(index_dir, like)
            names = [os.fspath(path) for path in like]
            results = searching.search_vectors(
                index_dir, xq, names, k, min_score, filters, own.tolist()
            )
            self._flush_notices(index_dir)
            return results

    def search_vectors(
        self,
        xq: Any,
        *,
        k: int = defaults.TOP_K,
        names: Sequence[str] | None = None,
        filters: SearchFilter | None = None,
    ) -> list[QueryResult]:
        """Neighbours of ready-made query vectors `xq` (n, dim) float32, L2-normalised."""
        with self._open() as index_dir:
            labels = list(names) if names is not None else [str(i) for i in range(len(xq))]
            results = searching.search_vectors(index_dir, xq, labels, k, filters=filters)
            self._flush_notices(index_dir)
            return results

    def export(self, out: str | os.PathLike[str], fmt: str = "parquet") -> exchange.ExportReport:
        """Write every stored embedding to `out` ('npy' + sidecar, or 'parquet')."""
        with self._open() as index_dir:
            report = exchange.export(index_dir, os.fspath(out), fmt)
            self._flush_notices(index_dir)
            return report

    def info(self) -> dict[str, Any]:
        """Counts, model, weights, dim, index type, bytes on disk."""
        with self._open() as index_dir:
            summary = index_summary(index_dir)
            self._flush_notices(index_dir)
            return summary

    def manifest(self) -> Manifest:
        with self._open() as index_dir:
            return index_dir.require_manifest()

    def check(self, repair: bool = False, wait: bool = False) -> checking.CheckReport:
        """Verify the catalogue, manifest.json, vectors.faiss and leftover temporary files;
        with `repair`, rebuild the derived files from the catalogue (see ops.checking)."""
        return checking.check(self.directory, repair=repair, wait=wait)

    # -- helpers ----------------------------------------------------------------------------

    def _load_for(
        self, manifest: Manifest, device: str, precision: str, options: IndexOptions | None
    ) -> Any:
        """The embedder an existing index was built with, threads configured, announced."""
        from .embedding.embedder import load_embedder

        embedder = load_embedder(manifest.model.name, manifest.model.weights, device, precision)
        self._check_same_weights(manifest, embedder.info.weights)
        _configure_threads(embedder.device, options)
        self._notify(f"embedding with {embedder.info.name} on {embedder.describe()}")
        return embedder

    def _existing_manifest(self) -> Manifest | None:
        if not os.path.isfile(os.path.join(self.directory, defaults.CATALOG_FILE)):
            return None
        try:
            with self._open() as index_dir:
                self._flush_notices(index_dir)  # e.g. manifest.json was rewritten
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


def _configure_threads(device: str, options: IndexOptions | None) -> None:
    """Set torch's threads to this machine's plan (see `pipeline.plan_resources`)."""
    from .embedding.embedder import configure_threads
    from .ops import pipeline

    workers = options.workers if options is not None else None
    configure_threads(pipeline.plan_resources(device, workers).threads)


class _LazyEmbedder:
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


def _resolve_device(device: str) -> str:
    """`resolve_device`, without importing torch (seconds) where Linux shows no GPU at all."""
    gpu_nodes = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd")
    if device == "auto" and sys.platform == "linux" and not any(map(os.path.exists, gpu_nodes)):
        return "cpu"
    from .embedding.embedder import resolve_device

    return resolve_device(device)


def _versions() -> dict[str, str]:
    # Package metadata, not `import torch`: `retrieval import` records versions too and
    # needs no model (importing torch costs seconds).
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        module = sys.modules.get(name)  # loaded already: its own string (e.g. "+cu130")
        if module is not None:
            return str(module.__version__)
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {
        "retrieval": __version__,
        "torch": installed("torch"),
        "timm": installed("timm"),
        "python": platform.python_version(),
    }
