"""The vector-index cache of an index directory (vectors.faiss) and the PCA reduction it holds
its vectors in: loaded lazily, rebuilt from the catalogue when damaged, patched with the
catalogue's changes, written back when this process may write.

`IndexDir` owns one `VectorCache` and lends it the catalogue, the manifest, the writer lock
and its notices. This module and `searcher` are the only parts of an index directory that
talk to the vectors modules (FAISS); `ops` reach the cache through them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import defaults
from ..errors import (
    CatalogCorrupt,
    ReadOnlyIndex,
    RetrievalError,
    StorageError,
    UnsafeIndexFile,
    UsageError,
)
from . import reduction, vectors
from .files import WriterLock
from .manifest import Manifest

# Re-exported (noqa: F401) for ops, which name index types and dtypes but do not build indexes.
from .vectors import (  # noqa: F401
    INDEX_TYPES,
    VECTOR_DTYPES,
    Built,
    VectorsDamaged,
    target_layout,
)

if TYPE_CHECKING:
    from .index_dir import IndexDir

#: A catalogue change larger than this (and than half the cache) rebuilds the cache instead
#: of patching it: a rebuild streams from the catalogue, a patch holds the whole change in RAM.
_PATCH_MAX = 50_000
#: Candidates per result re-scored against the full vectors when the cache is lossy and the
#: manifest sets no `rerank` of its own. Measured on 200k of bench_ann's 2048-d vectors, nprobe
#: 32, recall@10: PQ codes (m=512) 0.865 with 8, 0.980 with 32; a 256-d reduction 1.000 with 8.
RERANK_DEFAULT = {"ivfpq": 32, "reduced": 8}
#: The catalogue meta key holding the learned reduction (its SHA-256 is in the manifest).
REDUCTION_KEY = "reduction"


class VectorCache:
    """vectors.faiss of one index directory (`base`) and its learned reduction."""

    #: Which backend this is (the manifest's `vectors.kind`; `milvus.MilvusVectors` too).
    kind = "faiss"
    #: Whether a cache with exact scores can be range-searched (see `RangeFinder`).
    exact_range = True

    def __init__(self, owner: IndexDir) -> None:
        self._owner = owner
        self.catalog = owner.catalog
        self._base: Built | None = None
        self._reduction: reduction.Reduction | None = None
        self._reduction_sha: str | None = None  # the checksum it was loaded or learned with

    @property
    def path(self) -> str:
        return os.path.join(self._owner.directory, defaults.VECTORS_FILE)

    def close(self) -> None:
        """Release what the backend holds open (nothing: a FAISS index is plain memory)."""

    def verify_owner(self) -> None:
        """Raise CopiedIndex when this index folder may not use its search index (a copy
        sharing a Milvus collection; vectors.faiss is the folder's own)."""

    def manifest(self) -> Manifest:
        return self._owner.require_manifest()

    # -- loading, rebuilding, writing -------------------------------------------------------

    def base(self) -> Built:
        """The cache as loaded (or rebuilt, if it was damaged) from disk."""
        if self._base is None:
            try:
                self._base = self.read_file()
                self._check_binding(self._base)
            except VectorsDamaged as exc:
                self._base = self._rebuild(str(exc))
            vectors.set_search_params(self._base.index, self.manifest().index_params)
        return self._base

    def read_file(self) -> Built:
        """vectors.faiss as it is on disk, checksum verified; raises VectorsDamaged (reason)."""
        return vectors.read(self.path)

    def _check_binding(self, built: Built) -> None:
        """Raise VectorsDamaged when `built` is not this catalogue's or not the manifest's size."""
        if built.catalog_id != self._owner.catalog_id:
            raise VectorsDamaged("it was built from another catalogue")
        if built.index.d != self.manifest().cache_dim:
            self._owner.forget_manifest()  # a writer may have learned a reduction since
            if built.index.d != self.manifest().cache_dim:
                raise VectorsDamaged("its dimension differs from the manifest's")

    def rebuild(self, reason: str = "rebuilt on request", quiet: bool = False) -> int:
        """Rebuild the cache from every stored vector; returns its generation.

        `quiet`: a planned rebuild (optimize), so no notice about it."""
        before = len(self._owner.notices)
        self._base = self._rebuild(reason)
        if quiet:
            del self._owner.notices[before:]
        return self._base.generation

    def _rebuild(self, reason: str) -> Built:
        manifest = self.manifest()
        self.reduction()  # loaded before the snapshot (one connection at a time)
        with self.catalog.read() as conn:
            generation = self.catalog.generation(conn)
            built = Built(self._build(conn, manifest), generation)
        if reason != "missing" or self.catalog.get_meta("vectors_written"):
            self._owner.notices.append(
                f"{self.path} could not be used ({reason}); rebuilt it from the catalogue "
                f"({vectors.count(built.index)} vectors)"
            )
        self._persist(built)
        return built

    def _persist(self, built: Built) -> None:
        """Write the cache if this process may write (holds or can take the lock)."""
        temporary = None
        if self._owner.lock is None:
            temporary = WriterLock(os.path.join(self._owner.directory, defaults.LOCK_FILE))
            try:
                temporary.acquire(wait=False)
            except (ReadOnlyIndex, UnsafeIndexFile) as exc:
                self._owner.notices.append(f"searched an in-memory copy, not saved: {exc}")
                return
            except (RetrievalError, OSError):
                return  # a writer is running; it will write the cache itself
        try:
            self._write(built)
        except StorageError as exc:
            self._owner.notices.append(f"could not save the rebuilt vector index: {exc}")
        finally:
            if temporary is not None:
                temporary.release()

    def _write(self, built: Built) -> None:
        vectors.write(self.path, built, catalog_id=self._owner.catalog_id)
        if not self.catalog.get_meta("vectors_written"):
            self.catalog.set_meta("vectors_written", "1")

    def sync(self) -> int:
        """Bring the cache file up to the catalogue's generation; returns that generation.

        The cache is patched with the rows changed since it was written, or rebuilt when the
        change is large, its type must change (the manifest's, or `auto`'s new choice) or an
        HNSW graph needs compacting.
        """
        self._learn_reduction()
        manifest = self._relayout()
        base = self.base()
        self.reduction()
        with self.catalog.read() as conn:
            generation = self.catalog.generation(conn)
            if generation == base.generation:
                return generation
            built = self._patched(conn, base, manifest, generation)
            if built is None:
                built = Built(self._build(conn, manifest), generation)
        self._base = built
        self._write(built)
        return generation

    def _patched(self, conn: Any, base: Built, manifest: Manifest, generation: int) -> Built | None:
        """`base` patched up to `generation`, or None when it must be rebuilt instead."""
        n = self.catalog.counts(conn)["ok"]
        same_layout = base.index.d == manifest.cache_dim and vectors.layout(
            base.index
        ) == vectors.target_layout(manifest.index_type, n)
        changed = self.catalog.changed_count(conn, base.generation)
        if not same_layout or changed > max(_PATCH_MAX, vectors.count(base.index) // 2):
            return None
        delta = self.catalog.delta(conn, base.generation, manifest.dim)
        added = self.project(delta.vectors)
        return vectors.patch(base, delta.stale, delta.ids, added, generation)

    def _build(self, conn: Any, manifest: Manifest) -> Any:
        """A new FAISS index over every stored vector (reduced, if the manifest says so),
        streamed from the catalogue."""
        n = self.catalog.counts(conn)["ok"]

        def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for ids, xb in self.catalog.iter_vectors(conn, manifest.dim):
                yield ids, self.project(xb)

        index = vectors.build_from(
            batches,
            n,
            manifest.cache_dim,
            manifest.index_type,
            manifest.index_params,
            manifest.vector_dtype,
        )
        vectors.set_search_params(index, manifest.index_params)
        return index

    def _relayout(self) -> Manifest:
        """Under the `auto` policy, re-choose the type for the collection's current size.

        The manifest changes (and the cache is rebuilt) when the choice's type differs, or an
        IVF's list count should at least double because the collection grew about 4x.
        """
        manifest = self.manifest()
        policy = manifest.index_policy
        if policy.get("requested") != "auto":
            return manifest
        with self.catalog.read() as conn:
            n = self.catalog.counts(conn)["ok"]
        chosen, params = choose_layout(manifest, n, policy.get("memory_bytes"))
        old_nlist = int(manifest.index_params.get("nlist") or 0)
        grown = chosen == manifest.index_type and 0 < 2 * old_nlist <= int(params.get("nlist", 0))
        if chosen != manifest.index_type or grown:
            manifest = manifest.with_index(chosen, params)
            self._owner.set_manifest(manifest)
        return manifest

    # -- the reduction ------------------------------------------------------------------------

    def reduction(self) -> reduction.Reduction | None:
        """The learned PCA reduction of the cache, or None (none asked for, or not yet learned).

        Raises CatalogCorrupt when the stored matrix does not match the manifest's checksum.
        """
        manifest = self.manifest()
        if not manifest.reduced:
            return None
        expected = manifest.reduction["sha256"]
        # Compared with the checksum kept from loading: hashing the matrix again on every
        # call would cost a serialisation + SHA-256 per search and per build batch.
        if self._reduction is None or self._reduction_sha != expected:
            try:
                data = self.catalog.get_blob(REDUCTION_KEY)
            except ValueError:
                data = None
            if data is None or reduction.sha256(data) != expected:
                raise CatalogCorrupt(
                    self.catalog.path, "its learned PCA reduction is missing or altered"
                )
            self._reduction = reduction.Reduction.from_bytes(data)
            self._reduction_sha = expected
        return self._reduction

    def project(self, xb: np.ndarray) -> np.ndarray:
        """Full (n, dim) vectors as the cache holds them: reduced, or as they are.

        Call `reduction()` before opening a catalogue snapshot: it may read the catalogue."""
        learned = self.reduction()
        return xb if learned is None else learned.apply(xb)

    def _learn_reduction(self) -> None:
        """Learn the reduction the manifest asks for, once the collection is large enough.

        The matrix is stored in the catalogue with the manifest that records its checksum, in
        one transaction; the cache is then rebuilt by `sync` (its dimension changed).
        """
        manifest = self.manifest()
        wanted = manifest.reduction
        if not wanted or manifest.reduced:
            return
        dim = int(wanted["dim"])
        with self.catalog.read() as conn:
            n = self.catalog.counts(conn)["ok"]
            if n < reduction.min_vectors(dim):
                return
            learned = reduction.learn(
                (xb for _, xb in self.catalog.iter_vectors(conn, manifest.dim)),
                n,
                dim,
                bool(wanted.get("whiten", False)),
            )
        manifest = replace(manifest, reduction=learned.describe())
        self._owner.set_manifest(manifest, {REDUCTION_KEY: learned.to_bytes()})
        self._reduction, self._reduction_sha = learned, manifest.reduction["sha256"]

    # -- what searches, checks and `info` ask of it --------------------------------------------

    def rerank_factor(self) -> int:
        """Candidates fetched per wanted result and re-scored with the full stored vectors
        (0: the cache's own scores are final). Default: RERANK_DEFAULT for lossy caches."""
        manifest = self.manifest()
        if manifest.rerank is not None:
            return manifest.rerank
        if vectors.layout(self.base().index) == "ivfpq":
            return RERANK_DEFAULT["ivfpq"]
        return RERANK_DEFAULT["reduced"] if manifest.reduced else 0

    def candidates(
        self,
        base: Built,
        xc: np.ndarray,
        k: int,
        exclude: np.ndarray,
        allow: np.ndarray | None,
        where: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of `base` (this cache, as loaded) for queries `xc` (nq, cache_dim) float32:
        D (nq, k) float32, I (nq, k) int64, -1 = none; see `vectors.search`. `where` (the
        conditions `allow` came from) is for backends that filter by themselves."""
        return vectors.search(base.index, xc, k, exclude=exclude, allow=allow)

    def describe(self) -> dict[str, Any]:
        """Type, parameters and estimated memory of the loaded cache, for `info`."""
        return vectors.describe(self.base().index)

    def set_search_params(self, params: dict[str, Any]) -> None:
        """Apply query-time knobs (nprobe, efSearch) to the loaded cache, not saved."""
        vectors.set_search_params(self.base().index, params)

    def effective_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids the cache answers for, ids the catalogue holds), both sorted int64, for checks."""
        manifest = self.manifest()
        base = self.base()
        with self.catalog.read() as conn:
            delta = self.catalog.delta(conn, base.generation, manifest.dim)
            stored = np.sort(self.catalog.all_vectors(conn, manifest.dim)[0])
        cached = vectors.stored_ids(base.index)
        gone = np.union1d(delta.stale, base.tombstones)
        cached = np.sort(np.concatenate([cached[~np.isin(cached, gone)], delta.ids]))
        return cached, stored

    def held_ids(self, built: Built) -> np.ndarray:
        """Every id `built` stores (int64, unsorted, duplicates included)."""
        return vectors.stored_ids(built.index)

    def differing(self, built: Built, conn: Any, live: np.ndarray, batch: int = 65536) -> int:
        """How many of the `live` ids' vectors in `built` differ from the stored ones, reduced
        as the cache holds them (0 for lossy PQ layouts), within `conn`'s snapshot."""
        if vectors.layout(built.index) == "ivfpq":
            return 0  # product-quantised codes are approximations by design
        manifest = self.manifest()
        atol = 1e-6 if manifest.vector_dtype == "float32" else 1e-3
        if manifest.reduced:
            atol = max(atol, 1e-5)  # the projection's float32 rounding
        reduced = self.reduction()
        differ = 0
        for ids, xb in self.catalog.iter_vectors(conn, manifest.dim, batch=batch):
            keep = np.isin(ids, live)
            if keep.any():
                cached = vectors.reconstruct(built.index, ids[keep])
                expected = xb[keep] if reduced is None else reduced.apply(xb[keep])
                close = np.isclose(cached, expected, atol=atol, rtol=0).all(axis=1)
                differ += int((~close).sum())
        return differ


def choose_layout(manifest: Manifest, n: int, memory: int | None) -> tuple[str, dict[str, Any]]:
    """`vectors.choose` for an index's cache (its dimension, dtype and `memory` budget, bytes);
    raises UsageError when not even IVF-PQ fits."""
    try:
        return vectors.choose(n, manifest.cache_dim, memory, manifest.vector_dtype)
    except MemoryError as exc:
        raise UsageError(
            f"{n} vectors of {manifest.cache_dim} dimensions need at least {exc.args[0]} bytes "
            "even as IVF-PQ; raise --memory, use --vector-dtype float16, or --dim to reduce them"
        ) from None
