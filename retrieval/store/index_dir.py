"""An index directory: the catalogue, the manifest and the vector-index cache, kept consistent.

    DIR/catalog.sqlite   rows and vectors (source of truth, SQLite WAL)
    DIR/manifest.json    mirror of the manifest stored in the catalogue
    DIR/vectors.faiss    FAISS cache of the vectors, stamped with a catalogue generation
    DIR/writer.lock      held by the one process allowed to write

`IndexDir` is the directory's lifecycle: opening for reading, writing or checking, the writer
lock, the manifest and its mirror, the notices a run prints. Its `cache` (`vector_cache`) is
the vectors.faiss part, and `searcher` searches it; see there how readers stay consistent
without a lock.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .. import defaults
from ..errors import CatalogCorrupt, IndexNotFound, ReadOnlyIndex, StorageError
from . import reduction, searcher
from .catalog import Catalog
from .files import (
    WriterLock,
    atomic_write,
    describe_os_error,
    open_regular,
    read_only_media,
    remove_stale_temps,
)
from .manifest import Manifest

# Re-exported (noqa: F401): they lived here before the cache and search moved out.
from .searcher import Neighbour, exact_search, merge_topk  # noqa: F401
from .vector_cache import (  # noqa: F401
    REDUCTION_KEY,
    RERANK_DEFAULT,
    Built,
    VectorCache,
    choose_layout,
)

#: How `_sync_manifest_file`'s notice words each `manifest_file_problem` (else "was ...").
_MIRROR_WORDS = {"differs": "did not match the catalogue", "missing": "was missing"}


class IndexDir:
    """One index directory, opened for reading (`open`), writing (`open_writer`) or checking
    (`open_for_check`); `lock` is the writer lock when this process holds it."""

    def __init__(self, directory: str, catalog: Catalog, lock: WriterLock | None) -> None:
        self.directory = directory
        self.catalog = catalog
        self.lock = lock
        self.notices: list[str] = []
        self._manifest: Manifest | None = None
        #: The catalogue's id, which binds vectors.faiss to it ("" for an old catalogue).
        self.catalog_id = catalog.catalog_id()
        self._cache: VectorCache | None = None

    @property
    def cache(self) -> VectorCache:
        """The search index: the vectors.faiss cache and its reduction (see `vector_cache`),
        or, when the manifest says so, a Milvus collection in the same role (`milvus`)."""
        manifest = self.manifest
        kind = manifest.vectors.get("kind") if manifest is not None else None
        if self._cache is None or self._cache.kind != (kind or "faiss"):
            if self._cache is not None:
                self._cache.close()
            if kind == "milvus":
                from .milvus import MilvusVectors

                self._cache = MilvusVectors(self)
            else:
                self._cache = VectorCache(self)
        return self._cache

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> IndexDir:
        """Open an existing index for reading; raises IndexNotFound."""
        directory = os.path.abspath(os.fspath(directory))
        path = os.path.join(directory, defaults.CATALOG_FILE)
        if not os.path.lexists(path):  # a planted FIFO or link is refused by Catalog
            raise IndexNotFound(directory)
        opened = cls(directory, Catalog(path, writer=False), None)
        try:
            if opened.manifest is None:
                raise IndexNotFound(directory)
            opened.verify_vector_size()
        except BaseException:
            opened.close()
            raise
        opened._sync_manifest_file()
        return opened

    @staticmethod
    def check_writable(directory: str) -> None:
        """Raise ReadOnlyIndex when `directory` (not made yet: its nearest existing parent)
        is on read-only media; writers call it before any costly work (loading a model)."""
        folder = os.path.abspath(directory)
        while not os.path.exists(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)
        if read_only_media(folder):
            raise ReadOnlyIndex(directory)

    @classmethod
    def open_writer(cls, directory: str | os.PathLike[str], wait: bool = False) -> IndexDir:
        """Open (creating if needed) an index for writing, holding its writer lock."""
        directory = os.path.abspath(os.fspath(directory))
        cls.check_writable(directory)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the index directory {directory}: {describe_os_error(exc)}"
            ) from None
        lock = WriterLock(os.path.join(directory, defaults.LOCK_FILE))
        lock.acquire(wait)
        try:
            remove_stale_temps(directory)
            catalog = Catalog(os.path.join(directory, defaults.CATALOG_FILE), writer=True)
        except BaseException:
            lock.release()
            raise
        opened = cls(directory, catalog, lock)
        try:
            opened.catalog_id = catalog.ensure_catalog_id()
            if opened.manifest is not None:
                opened.verify_vector_size()
                opened.cache.verify_owner()  # before any work: a copy sharing a collection
        except BaseException:
            opened.close()
            raise
        if opened.manifest is not None:
            opened._sync_manifest_file()
        return opened

    @classmethod
    def open_for_check(
        cls, directory: str | os.PathLike[str], repair: bool = False, wait: bool = False
    ) -> IndexDir:
        """Open an index for `check`: holding the writer lock so no run changes it while it
        is looked at, except on read-only media (nothing can change it there). The catalogue
        may hold objects retrieval did not create (check reports them); nothing is verified
        or rewritten on opening (check reports that too).

        Raises IndexNotFound, IndexBusy (a writer runs; `wait` queues behind it) and
        ReadOnlyIndex when `repair` is asked on read-only media.
        """
        directory = os.path.abspath(os.fspath(directory))
        path = os.path.join(directory, defaults.CATALOG_FILE)
        if not os.path.lexists(path):
            raise IndexNotFound(directory)
        lock = WriterLock(os.path.join(directory, defaults.LOCK_FILE))
        held = not read_only_media(directory)
        if held:
            try:
                lock.acquire(wait)
            except ReadOnlyIndex:
                held = False
        if not held and repair:
            raise ReadOnlyIndex(directory)
        try:
            catalog = Catalog(path, writer=False, refuse_foreign=False)
            return cls(directory, catalog, lock if held else None)
        except BaseException:
            lock.release()
            raise

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
        self.catalog.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> IndexDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- manifest ---------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest | None:
        if self._manifest is None:
            raw = self.catalog.manifest()
            self._manifest = Manifest.from_dict(raw) if raw else None
            if self._manifest is not None:
                self.catalog.vector_dtype = np.dtype(self._manifest.vector_dtype)
                self.catalog.dim = self._manifest.dim
        return self._manifest

    def vector_size_problem(self) -> str | None:
        """Why the stored vectors do not fit the manifest (a manifest edited inside the
        catalogue), or None. Checks the first stored vector only; `check` checks them all."""
        manifest = self.require_manifest()
        found = self.catalog.first_vector_size()
        if found is None or found == manifest.dim:
            return None
        return (
            f"its stored vectors are {found}-d but its manifest says {manifest.dim}-d "
            f"{manifest.vector_dtype} ({manifest.model.name})"
        )

    def verify_vector_size(self) -> None:
        """Raise CatalogCorrupt when the stored vectors do not fit the manifest."""
        problem = self.vector_size_problem()
        if problem:
            raise CatalogCorrupt(self.catalog.path, problem)

    def require_manifest(self) -> Manifest:
        if self.manifest is None:
            raise IndexNotFound(self.directory)
        return self.manifest

    def set_manifest(self, manifest: Manifest, blobs: dict[str, bytes] | None = None) -> None:
        self.catalog.set_manifest(manifest.to_dict(), blobs)
        self._manifest = manifest
        self.catalog.vector_dtype = np.dtype(manifest.vector_dtype)
        self.catalog.dim = manifest.dim
        self.write_manifest_file()

    def forget_manifest(self) -> None:
        """Drop the cached manifest: the next use reads the catalogue's (a writer changed it)."""
        self._manifest = None

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.directory, defaults.MANIFEST_FILE)

    def manifest_file_problem(self) -> str | None:
        """What is wrong with manifest.json, the mirror of the catalogue's manifest: "differs",
        "missing", "unreadable" or "unreadable (REASON)"; None when it is an exact copy."""
        expected = self.require_manifest().to_json()
        try:
            with open_regular(self.manifest_path) as fh:
                if fh.read().decode("utf-8") == expected:
                    return None
            return "differs"
        except FileNotFoundError:
            return "missing"
        except UnicodeDecodeError:
            return "unreadable"
        except OSError as exc:
            return f"unreadable ({exc.strerror or exc})"

    def _sync_manifest_file(self) -> None:
        """Rewrite a wrong manifest.json from the catalogue, saying so in `notices`."""
        problem = self.manifest_file_problem()
        if problem is None:
            return
        said = _MIRROR_WORDS.get(problem, f"was {problem}")
        try:
            self.write_manifest_file()
            self.notices.append(f"{self.manifest_path} {said}; rewrote it from the catalogue")
        except StorageError as exc:
            self.notices.append(f"{self.manifest_path} {said} and could not be rewritten: {exc}")

    def write_manifest_file(self) -> None:
        """Write manifest.json (atomically) from the catalogue's manifest."""
        text = self.require_manifest().to_json().encode("utf-8")
        atomic_write(self.manifest_path, lambda fh: fh.write(text), "manifest")

    # -- the vector cache (see `vector_cache` and `searcher`) ---------------------------------

    @property
    def vectors_path(self) -> str:
        return self.cache.path

    def base(self) -> Built:
        """The vector-index cache as loaded (or rebuilt, if it was damaged) from disk."""
        return self.cache.base()

    def sync_vectors(self) -> int:
        """Bring vectors.faiss up to the catalogue's generation; returns it (see
        `VectorCache.sync`)."""
        return self.cache.sync()

    def rebuild_vectors(self, quiet: bool = False) -> int:
        """Rebuild the cache from every stored vector (after an index-type change, repair).

        `quiet`: a planned rebuild (optimize), so no notice about it."""
        return self.cache.rebuild("rebuilt on request", quiet)

    def reduction(self) -> reduction.Reduction | None:
        """The cache's learned PCA reduction, or None (see `VectorCache.reduction`)."""
        return self.cache.reduction()

    def rerank_factor(self) -> int:
        """Candidates re-scored per wanted result (see `VectorCache.rerank_factor`)."""
        return self.cache.rerank_factor()

    def search(
        self,
        xq: np.ndarray,
        k: int,
        allow: np.ndarray | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[list[Neighbour]]:
        """Top-k neighbours of each query row of `xq` (nq, d) float32, best first.

        `allow` (int64 ids) restricts results to those ids; `where`, the conditions that
        made them (`Catalog.filter_ids`'s keywords), lets a Milvus collection filter by
        itself. Sees one catalogue snapshot.
        """
        return searcher.search(self.cache, xq, k, allow, where)

    def effective_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids in the cache file, ids the catalogue holds), both sorted int64, for checks."""
        return self.cache.effective_ids()

    def disk_bytes(self) -> int:
        """Bytes of every file under the directory, in its folders too (a Milvus Lite .db
        folder, the thumbnails cache); a file removed meanwhile counts 0."""
        total = 0
        for folder, _, names in os.walk(self.directory):
            for name in names:
                try:
                    total += os.path.getsize(os.path.join(folder, name))
                except OSError:
                    pass
        return total


def _describe_reduction(manifest: Manifest) -> dict[str, Any] | None:
    """The manifest's reduction for `info`; one not learned yet says when it will be."""
    if not manifest.reduction:
        return None
    if manifest.reduced:
        return dict(manifest.reduction)
    wanted = reduction.min_vectors(int(manifest.reduction["dim"]))
    return {**manifest.reduction, "learned": f"no: once the index holds {wanted} vectors"}


def index_summary(index_dir: IndexDir) -> dict[str, Any]:
    """Facts about an opened index for `info`."""
    manifest = index_dir.require_manifest()
    with index_dir.catalog.read() as conn:
        counts = index_dir.catalog.counts(conn)
        generation = index_dir.catalog.generation(conn)
    base = index_dir.base()
    return {
        "index": index_dir.directory,
        "images": counts["ok"],
        "failed": counts["failed"],
        "dim": manifest.dim,
        "model": manifest.model.name,
        "weights": manifest.model.weights.describe(),
        "pretrained": manifest.model.weights.pretrained,
        "precision": manifest.precision,
        "metric": manifest.metric,
        "vector_dtype": manifest.vector_dtype,
        "index_type": manifest.index_type,
        "index_policy": manifest.index_policy,
        "index_params": index_dir.cache.describe(),
        "reduction": _describe_reduction(manifest),
        "rerank": index_dir.rerank_factor(),
        "generation": generation,
        "vectors_generation": base.generation,
        "bytes_on_disk": index_dir.disk_bytes(),
    }
