"""The library API: everything the CLI does, as methods of `Index`.

>>> from retrieval import Index
>>> index = Index("indexes/photos")
>>> report = index.add(["~/Pictures"])                    # embed, incrementally
>>> [q.results[0].path for q in index.search(["query.jpg"], k=5)]
>>> index.export("photos.parquet", "parquet")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, BinaryIO

from . import defaults, engines
from .errors import IndexNotFound, UsageError
from .locate import BY_USER, locate
from .ops import (
    adding,
    ann,
    checking,
    dups,
    dups_apply,
    dups_undo,
    embedders,
    exchange,
    gallery,
    images,
    importing,
    indexing,
    pruning,
    querying,
    searching,
)
from .ops import storage as storage_policy
from .ops.dups import DupsReport
from .ops.images import Failure, ImageRecord
from .ops.indexing import IndexOptions, IndexReport, Progress
from .ops.searching import QueryResult, SearchFilter
from .pathnames import to_bytes
from .sources.scan import check_roots
from .specs import EngineOptions, StorageOptions, WeightsSpec
from .store.index_dir import IndexDir, index_summary
from .store.manifest import Manifest
from .store.shared_reader import SharedReader

Notify = Callable[[str], None]


class Index:
    """An index directory; with none given, $RETRIEVAL_INDEX, else the nearest
    indexes/default found walking up from the working directory, else the per-user default
    (see `retrieval.locate`; `location.reason` says which).

    `notify` receives one-line notices (device used, files repaired) meant for stderr.
    `shared=True` (for a long-running reader such as `retrieval serve`, used from many
    threads): the reading methods share one opened index, opened again when a writer has
    replaced its files, instead of opening the catalogue and the vector cache per call.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        notify: Notify | None = None,
        *,
        shared: bool = False,
    ):
        self._named = bool(directory)
        self.location = locate(directory)
        self.directory = self.location.directory
        self._notify = notify or (lambda message: None)
        self._shared = SharedReader(self.directory) if shared else None

    def close(self) -> None:
        """Close the shared reader of `shared=True` (nothing to do otherwise)."""
        if self._shared is not None:
            self._shared.close()

    # -- writing ----------------------------------------------------------------------------

    def add(
        self,
        paths: Sequence[str | os.PathLike[str]] = (),
        *,
        model: str | None = None,
        weights: WeightsSpec | None = None,
        device: str = "auto",
        precision: str = "auto",
        options: IndexOptions | None = None,
        wait: bool = False,
        progress: Progress | None = None,
        storage: StorageOptions | None = None,
        engine: EngineOptions | None = None,
    ) -> IndexReport:
        """Index `paths` (folders or files): add new, update changed, drop vanished files.

        The paths are remembered; with no `paths`, every remembered root still on disk is
        scanned again (one that is gone is skipped with a notice: `prune` forgets it).
        A new index uses `model` (default resnet50) with `weights` (default: pretrained);
        an existing one must be asked for the same or nothing. `storage` sets how vectors are
        stored and searched (see `StorageOptions`: index type, memory budget, vector dtype,
        a PCA reduction `dim` -- plain PCA unless `whiten=True` -- and `rerank`); None keeps
        what the index has. `engine` chooses where files are decoded and embedded (see
        `EngineOptions`; default: here). Raises RetrievalError.
        """
        if not paths:
            paths = self._remembered_roots()
        check_roots(paths)  # a mistyped folder must not leave a new, empty index behind
        self._locate_for_writing()
        adding.check_workers(options, self._notify)
        IndexDir.check_writable(self.directory)
        existing = self._existing_manifest()
        wanted = adding.model_request(existing, self.directory, model, weights)
        runner = engines.create(engine, device, precision, self._notify)
        with engines.running(runner, wanted), embedders.kept_torch_threads():
            embedder = adding.embedder_for(
                existing,
                self.directory,
                model=model,
                weights=weights,
                device=device,
                precision=precision,
                options=options,
                notify=self._notify,
                engine=runner,
            )
            # checked before anything is created: a bad option leaves no half-made index
            planned = adding.planned_manifest(existing, embedder, storage, self.directory)
            with IndexDir.open_writer(self.directory, wait=wait) as index_dir:
                self._flush_notices(index_dir)
                adding.set_manifest(index_dir, existing, planned, storage)
                try:
                    report = indexing.index_paths(
                        index_dir, embedder, paths, options or IndexOptions(), progress, runner
                    )
                finally:
                    self._flush_notices(index_dir)
                for notice in report.notices():
                    self._notify(notice)
                return report

    def import_files(
        self,
        files: Sequence[str | os.PathLike[str]],
        *,
        storage: StorageOptions | None = None,
        wait: bool = False,
        manifest: str | os.PathLike[str] | None = None,
    ) -> importing.ImportReport:
        """Add the embeddings of `export` files (.parquet, .npy + .rows.json, or a folder in
        the clip-retrieval layout). `manifest`: a manifest.json for parquet files that another
        tool rewrote (they lose theirs); without it such files take an existing index's.

        A new index takes the files' model metadata; an existing one refuses files from
        another model, weights or dimension (IndexIncompatible). Every row of every file is
        checked before anything is written (ImportFormatError names the file, row and rule),
        and a new index that fails while it is written is removed. `storage` is `add`'s
        (`StorageOptions`; `dim`: a PCA reduction, plain PCA unless `whiten=True`).
        """

        self._locate_for_writing()
        IndexDir.check_writable(self.directory)

        def configure(manifest: Manifest, new: bool) -> Manifest:
            if new:
                manifest = replace(manifest, created_with=adding.versions(), index_policy={})
            return storage_policy.configure(manifest, self.directory, storage, new)

        given = None if manifest is None else os.fspath(manifest)
        sources = importing.read_files([os.fspath(f) for f in files], self.directory, given)
        for source in sources:
            if source.notice:
                self._notify(source.notice)
        with IndexDir.open_writer(self.directory, wait=wait) as index_dir:
            self._flush_notices(index_dir)
            try:
                return importing.import_files(index_dir, sources, configure)
            finally:
                self._flush_notices(index_dir)

    def prune(
        self,
        roots: Sequence[str | os.PathLike[str]] = (),
        *,
        dry_run: bool = False,
        wait: bool = False,
    ) -> pruning.PruneReport:
        """Remove images whose files no longer exist and forget remembered roots that are
        gone; with `roots`, forget those roots and remove every image under them instead.

        `dry_run` changes nothing (and takes no lock). Otherwise it holds the writer lock
        (`wait`: queue behind a running writer) and brings the vector cache up to date.
        Raises IndexNotFound, IndexBusy, UsageError (a root neither remembered nor indexed).
        """
        if self._existing_manifest() is None:
            raise IndexNotFound(self.directory)
        named = [to_bytes(root) for root in roots]
        opened = self._open() if dry_run else IndexDir.open_writer(self.directory, wait=wait)
        with opened as index_dir:
            try:
                return pruning.prune(index_dir, named, dry_run)
            finally:
                self._flush_notices(index_dir)

    def apply_dups(
        self,
        plan: Any,
        move_to: str | os.PathLike[str],
        *,
        journal: str | os.PathLike[str] | None = None,
        wait: bool = False,
    ) -> dups_apply.ApplyReport:
        """Move the members of `plan` that are not kept into `move_to` (relative to their
        indexed root), journal first, re-pointing their rows (nothing is re-embedded or
        deleted). `plan` is a `MovePlan` or the `DupsReport` of `dups()`. `journal`
        defaults to MOVE_TO/retrieval-dups-<UTC time>.journal. Holds the writer lock (`wait`
        queues). Raises UsageError (a move-to inside the index or an indexed root),
        StorageError (journal not writable: nothing moved), Interrupted."""
        if not isinstance(plan, dups_apply.MovePlan):  # a DupsReport
            plan = dups_apply.plan_from_report(plan)
        if self._existing_manifest() is None:
            raise IndexNotFound(self.directory)
        with IndexDir.open_writer(self.directory, wait=wait) as index_dir:
            try:
                return dups_apply.apply_moves(index_dir, plan, move_to, journal)
            finally:
                self._flush_notices(index_dir)

    def undo_dups(
        self, journal: str | os.PathLike[str], *, wait: bool = False
    ) -> dups_apply.ApplyReport:
        """Put back what `apply_dups` moved, from its journal; a file changed or removed
        since is a per-file failure, files already back are left alone (safe to repeat)."""
        if self._existing_manifest() is None:
            raise IndexNotFound(self.directory)
        with IndexDir.open_writer(self.directory, wait=wait) as index_dir:
            try:
                return dups_undo.undo(index_dir, journal)
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
        images: Sequence[str | os.PathLike[str] | searching.QueryStream] = (),
        *,
        like: Sequence[str | os.PathLike[str]] = (),
        filters: SearchFilter | None = None,
        k: int = defaults.TOP_K,
        min_score: float | None = None,
        device: str = "auto",
        max_megapixels: float = defaults.MAX_MEGAPIXELS,
        like_ids: Sequence[int] = (),
        embedder: Any = None,
    ) -> list[QueryResult]:
        """The k indexed images nearest to each query, best first, in one batched search.

        Queries are image files (`images`, embedded with the index's model; a `QueryStream`
        reads one from an open binary stream such as stdin) and images already indexed
        (`like`: their stored vectors, no model is loaded for them; a `like` query leaves
        itself out of its results; `like_ids` does the same by catalogue id, as search
        results carry it). `filters` restricts the results. k is capped at the number of
        searchable images. One result per query, images, then `like`, then `like_ids`: a
        query that cannot be used (missing, undecodable, not indexed) gets its `error` and
        no results, and the others are still searched. `embedder`: a model from
        `load_embedder()`, so a long-running process loads it once.
        """
        querying.check_request(images, like, k, min_score, like_ids)
        with self._open() as index_dir:
            queries = querying.gather(
                index_dir, images, like, device, max_megapixels, like_ids, embedder
            )
            results = searching.search_queries(index_dir, queries, k, min_score, filters)
            self._flush_notices(index_dir)
            return results

    def load_embedder(self, device: str = "auto") -> Any:
        """The index's own model, loaded now, to pass as `search(..., embedder=)` or
        `embed(..., embedder=)` many times (a server loads it once per process).
        Raises IndexNotFound, ModelError, IndexIncompatible."""
        with self._open() as index_dir:
            manifest = index_dir.require_manifest()
            self._flush_notices(index_dir)
        return querying.query_embedder(manifest, device)

    def embed(
        self,
        images: Sequence[str | os.PathLike[str] | searching.QueryStream],
        *,
        embedder: Any = None,
        device: str = "auto",
        max_megapixels: float = defaults.MAX_MEGAPIXELS,
    ) -> list[searching.Query]:
        """One `Query` per image, in order, all embedded in one model call: its `vector`
        ((dim,) float32, L2-normalised, ready for `search_vectors`) or its `error` (not
        found, undecodable, over `max_megapixels`). `embedder`: see `load_embedder`."""
        if embedder is None:
            embedder = self.load_embedder(device)
        return searching.embed_each(embedder, images, max_megapixels)

    def search_vectors(
        self,
        xq: Any,
        *,
        k: int = defaults.TOP_K,
        names: Sequence[str] | None = None,
        filters: SearchFilter | None = None,
    ) -> list[QueryResult]:
        """Neighbours of ready-made query vectors `xq` (n, dim) float32, L2-normalised;
        k is capped at the number of searchable images."""
        with self._open() as index_dir:
            labels = list(names) if names is not None else [str(i) for i in range(len(xq))]
            results = searching.search_vectors(index_dir, xq, labels, k, filters=filters)
            self._flush_notices(index_dir)
            return results

    def dups(
        self,
        *,
        threshold: float = defaults.DUPS_THRESHOLD,
        under: Sequence[str | os.PathLike[str]] = (),
        keep: Sequence[str] = defaults.DUPS_KEEP,
        reference: Sequence[str | os.PathLike[str]] = (),
        progress: dups.Progress | None = None,
    ) -> dups.DupsReport:
        """Groups of near-duplicate images: connected components of "exact cosine >=
        `threshold`" among the stored vectors, each with its suggested keeper(s) first.

        `under`: only groups holding an image under one of these folders. `keep`: the keep
        rules in order (`retrieval.defaults.KEEP_RULES`). `reference`: folders whose images
        are always kept. Changes nothing. Raises IndexNotFound, UsageError (threshold
        outside (0, 1], unknown keep rule, a reference folder that does not exist).
        """
        named = [to_bytes(folder) for folder in under]
        refs = [to_bytes(folder) for folder in reference]
        dups.check_options(threshold, keep, refs)
        with self._open() as index_dir:
            try:
                return dups.find_dups(index_dir, threshold, named, keep, refs, progress)
            finally:
                self._flush_notices(index_dir)

    def image(self, image_id: int) -> ImageRecord:
        """The record of the searchable image with catalogue id `image_id` (a search result's
        `Hit.id`): path, size, mtime, width, height, format, content hash. Raises NotFound."""
        with self._open() as index_dir:
            return images.image_record(index_dir, image_id)

    def images(
        self, offset: int = 0, limit: int = 100, under: str | os.PathLike[str] | None = None
    ) -> list[ImageRecord]:
        """The searchable images in id order, a page at a time: skip `offset`, at most
        `limit` (>= 1), only those under the folder `under` when given. Raises UsageError."""
        with self._open() as index_dir:
            folder = os.fspath(under) if under else None
            return images.image_records(index_dir, offset, limit, folder)

    def failures(self, limit: int | None = None) -> list[Failure]:
        """The files that could not be indexed, by path, with their reasons (at most `limit`)."""
        with self._open() as index_dir:
            return images.failures(index_dir, limit)

    def thumbnail(self, image_id: int, size: int = defaults.THUMBNAIL_SIZE) -> bytes:
        """JPEG bytes of the centre square (`size` x `size` pixels, EXIF orientation applied)
        of image `image_id`, made by the indexer's decoder and cached in the index folder
        (by content hash and size; nothing is cached on read-only media). Raises NotFound,
        UsageError (a size outside `defaults.PICTURE_SIZES`), BadImage (with the reason the
        file cannot be shown: gone, changed into a non-image, above the pixel cap...)."""
        with self._open() as index_dir:
            return images.thumbnail(index_dir, image_id, size, defaults.THUMBNAIL_CACHE_BYTES)

    def preview(self, image_id: int, size: int = defaults.PREVIEW_SIZE) -> bytes:
        """JPEG bytes of image `image_id` for viewing: EXIF orientation applied, aspect ratio
        kept, longest side at most `size` pixels; cached and refused as `thumbnail` is."""
        with self._open() as index_dir:
            return images.preview(index_dir, image_id, size, defaults.THUMBNAIL_CACHE_BYTES)

    def gallery(
        self,
        found: Sequence[QueryResult] | DupsReport,
        *,
        max_megapixels: float = defaults.MAX_MEGAPIXELS,
        progress: Callable[[int, int], None] | None = None,
    ) -> str:
        """One self-contained HTML page (str) of what `search` (its list of QueryResult) or
        `dups` (a DupsReport) found: thumbnails embedded as data: URIs (from the thumbnail
        cache; none for images above `max_megapixels`, with the reason), scores and escaped
        paths; no script and no link, so it reads offline. `progress(done, total)`."""
        with self._open() as index_dir:
            return gallery.page(index_dir, found, max_megapixels, progress)

    def check_output(self, out: str | os.PathLike[str]) -> None:
        """Raise UsageError when a file written at `out` would land inside an index folder
        (this index's or any other): the faces check their -o before writing a report."""
        exchange.refuse_index_folder(self.directory, os.fspath(out))

    def export(
        self,
        out: str | os.PathLike[str] | BinaryIO,
        fmt: str = "parquet",
        layout: exchange.LayoutOptions | None = None,
    ) -> exchange.ExportReport:
        """Write every stored embedding to `out` ('npy' + sidecar, or 'parquet'); `out` is a
        file name (not inside an index folder) or, for parquet, an open binary stream. With
        `LayoutOptions(layout="clip-retrieval", ...)`, `out` is a new or empty folder that
        receives img_emb/*.npy, metadata/*.parquet and manifest.json."""
        target = out if hasattr(out, "write") else os.fspath(out)  # type: ignore[arg-type]
        with self._open() as index_dir:
            report = exchange.export(index_dir, target, fmt, layout)
            self._flush_notices(index_dir)
            return report

    def info(self) -> dict[str, Any]:
        """Counts, model, weights, dim, index type, bytes on disk."""
        with self._open() as index_dir:
            summary = index_summary(index_dir)
            self._flush_notices(index_dir)
        return {"index": summary.pop("index"), "located_by": self.location.reason, **summary}

    def manifest(self) -> Manifest:
        with self._open() as index_dir:
            return index_dir.require_manifest()

    def check(self, repair: bool = False, wait: bool = False) -> checking.CheckReport:
        """Verify the catalogue, manifest.json, vectors.faiss and leftover temporary files;
        with `repair`, rebuild the derived files from the catalogue (see ops.checking)."""
        return checking.check(self.directory, repair=repair, wait=wait)

    # -- helpers ----------------------------------------------------------------------------

    def _locate_for_writing(self) -> None:
        """Where a command that may create the index writes when none was named (the rule in
        `retrieval.locate`); announces a new index made there."""
        if self._named:
            return
        self.location = locate(None, creating=True)
        self.directory = self.location.directory
        if not os.path.isfile(os.path.join(self.directory, defaults.CATALOG_FILE)):
            self._notify(f"creating a new index at {self.directory} ({self.location.reason})")

    def _remembered_roots(self) -> list[str]:
        """The roots to re-scan for `add()` with no paths (announced); raises UsageError when
        there are none to scan."""
        if self._existing_manifest() is None:
            raise UsageError(
                f"there is no index at {self.directory} yet, so no folders to re-scan; "
                "name them: `retrieval index FOLDER...`"
            )
        with self._open() as index_dir:
            return adding.remembered_roots(index_dir, self._notify)

    def _existing_manifest(self) -> Manifest | None:
        if not os.path.isfile(os.path.join(self.directory, defaults.CATALOG_FILE)):
            return None
        try:
            with self._open() as index_dir:
                self._flush_notices(index_dir)  # e.g. manifest.json was rewritten
                return index_dir.manifest
        except IndexNotFound:
            return None

    def _open(self) -> Any:
        """A context manager giving an IndexDir opened for reading."""
        if self._shared is not None:
            return self._shared.borrow()  # raises on entering, as IndexDir.open does
        try:
            return IndexDir.open(self.directory)
        except IndexNotFound:
            if self.location.reason != BY_USER:
                raise
            raise IndexNotFound(self.directory, searched_from=os.getcwd()) from None

    def _flush_notices(self, index_dir: IndexDir) -> None:
        for notice in index_dir.notices:
            self._notify(notice)
        index_dir.notices.clear()
