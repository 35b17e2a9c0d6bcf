"""An index directory: the catalogue, the manifest and the vector-index cache, kept consistent.

    DIR/catalog.sqlite   rows and vectors (source of truth, SQLite WAL)
    DIR/manifest.json    mirror of the manifest stored in the catalogue
    DIR/vectors.faiss    FAISS cache of the vectors, stamped with a catalogue generation
    DIR/writer.lock      held by the one process allowed to write

Readers take no lock. They load `vectors.faiss` (generation G), then open a read snapshot of
the catalogue (generation S >= G, because a writer commits before it rewrites the cache) and
search the cache minus the ids changed since G plus those changed rows, so every search sees
exactly snapshot S, even while a writer is running or after it was killed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .. import defaults
from ..errors import (
    CatalogCorrupt,
    IndexNotFound,
    ReadOnlyIndex,
    RetrievalError,
    StorageError,
    UnsafeIndexFile,
    UsageError,
)
from . import reduction, vectors
from .catalog import Catalog, Delta
from .files import (
    WriterLock,
    atomic_write,
    describe_os_error,
    open_regular,
    read_only_media,
    remove_stale_temps,
)
from .manifest import Manifest

#: A catalogue change larger than this (and than half the cache) rebuilds the cache instead
#: of patching it: a rebuild streams from the catalogue, a patch holds the whole change in RAM.
_PATCH_MAX = 50_000
#: Candidates per result re-scored against the full vectors when the cache is lossy and the
#: manifest sets no `rerank` of its own. Measured on 200k of bench_ann's 2048-d vectors, nprobe
#: 32, recall@10: PQ codes (m=512) 0.865 with 8, 0.980 with 32; a 256-d reduction 1.000 with 8.
RERANK_DEFAULT = {"ivfpq": 32, "reduced": 8}
#: The catalogue meta key holding the learned reduction (its SHA-256 is in the manifest).
REDUCTION_KEY = "reduction"


@dataclass(frozen=True)
class Neighbour:
    """One search result: catalogue id, raw path bytes, cosine score."""

    id: int
    path: bytes
    score: float


class IndexDir:
    """One index directory, opened for reading (`open`) or writing (`open_writer`)."""

    def __init__(self, directory: str, catalog: Catalog, lock: WriterLock | None) -> None:
        self.directory = directory
        self.catalog = catalog
        self.lock = lock
        self.notices: list[str] = []
        self._manifest: Manifest | None = None
        self._base: vectors.Built | None = None
        self._reduction: reduction.Reduction | None = None
        self._reduction_sha: str | None = None  # the checksum it was loaded or learned with
        #: The catalogue's id, which binds vectors.faiss to it ("" for an old catalogue).
        self.catalog_id = catalog.catalog_id()

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

    @classmethod
    def open_writer(cls, directory: str | os.PathLike[str], wait: bool = False) -> IndexDir:
        """Open (creating if needed) an index for writing, holding its writer lock."""
        directory = os.path.abspath(os.fspath(directory))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the index directory {directory}: {describe_os_error(exc)}"
            ) from None
        if read_only_media(directory):
            raise ReadOnlyIndex(directory)
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
        except BaseException:
            opened.close()
            raise
        if opened.manifest is not None:
            opened._sync_manifest_file()
        return opened

    def close(self) -> None:
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
        self._write_manifest_file()

    def _sync_manifest_file(self) -> None:
        path = os.path.join(self.directory, defaults.MANIFEST_FILE)
        expected = self.require_manifest().to_json()
        try:
            with open_regular(path) as fh:
                if fh.read().decode("utf-8") == expected:
                    return
            problem = "did not match the catalogue"
        except FileNotFoundError:
            problem = "was missing"
        except UnicodeDecodeError:
            problem = "was unreadable"
        except OSError as exc:
            problem = f"was unreadable ({exc.strerror or exc})"
        try:
            self._write_manifest_file()
            self.notices.append(f"{path} {problem}; rewrote it from the catalogue")
        except StorageError as exc:
            self.notices.append(f"{path} {problem} and could not be rewritten: {exc}")

    def _write_manifest_file(self) -> None:
        text = self.require_manifest().to_json().encode("utf-8")
        path = os.path.join(self.directory, defaults.MANIFEST_FILE)
        atomic_write(path, lambda fh: fh.write(text), "manifest")

    # -- vectors ----------------------------------------------------------------------------

    @property
    def vectors_path(self) -> str:
        return os.path.join(self.directory, defaults.VECTORS_FILE)

    def base(self) -> vectors.Built:
        """The vector-index cache as loaded (or rebuilt, if it was damaged) from disk."""
        if self._base is None:
            try:
                self._base = vectors.read(self.vectors_path)
                if self._base.catalog_id != self.catalog_id:
                    raise vectors.VectorsDamaged("it was built from another catalogue")
                if self._base.index.d != self.require_manifest().cache_dim:
                    self._manifest = None  # a writer may have learned a reduction since
                    if self._base.index.d != self.require_manifest().cache_dim:
                        raise vectors.VectorsDamaged("its dimension differs from the manifest's")
            except vectors.VectorsDamaged as exc:
                self._base = self._rebuild(str(exc))
            vectors.set_search_params(self._base.index, self.require_manifest().index_params)
        return self._base

    def _rebuild(self, reason: str) -> vectors.Built:
        manifest = self.require_manifest()
        self.reduction()  # loaded before the snapshot (one connection at a time)
        with self.catalog.read() as conn:
            generation = self.catalog.generation(conn)
            built = vectors.Built(self._build(conn, manifest), generation)
        if reason != "missing" or self.catalog.get_meta("vectors_written"):
            self.notices.append(
                f"{self.vectors_path} could not be used ({reason}); rebuilt it from the catalogue "
                f"({vectors.count(built.index)} vectors)"
            )
        self._persist(built)
        return built

    def _persist(self, built: vectors.Built) -> None:
        """Write the cache if this process may write (holds or can take the lock)."""
        lock = self.lock
        temporary = None
        if lock is None:
            temporary = WriterLock(os.path.join(self.directory, defaults.LOCK_FILE))
            try:
                temporary.acquire(wait=False)
            except (ReadOnlyIndex, UnsafeIndexFile) as exc:
                self.notices.append(f"searched an in-memory copy, not saved: {exc}")
                return
            except (RetrievalError, OSError):
                return  # a writer is running; it will write the cache itself
        try:
            self._write_vectors(built)
        except StorageError as exc:
            self.notices.append(f"could not save the rebuilt vector index: {exc}")
        finally:
            if temporary is not None:
                temporary.release()

    def sync_vectors(self) -> int:
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
            n = self.catalog.counts(conn)["ok"]
            built = None
            same_layout = base.index.d == manifest.cache_dim and vectors.layout(
                base.index
            ) == vectors.target_layout(manifest.index_type, n)
            changed = self.catalog.changed_count(conn, base.generation)
            if same_layout and changed <= max(_PATCH_MAX, vectors.count(base.index) // 2):
                delta = self.catalog.delta(conn, base.generation, manifest.dim)
                added = self._project(delta.vectors)
                built = vectors.patch(base, delta.stale, delta.ids, added, generation)
            if built is None:
                built = vectors.Built(self._build(conn, manifest), generation)
        self._base = built
        self._write_vectors(built)
        return generation

    def _build(self, conn: Any, manifest: Manifest) -> Any:
        """A new FAISS index over every stored vector (reduced, if the manifest says so),
        streamed from the catalogue."""
        n = self.catalog.counts(conn)["ok"]

        def batches() -> Any:
            for ids, xb in self.catalog.iter_vectors(conn, manifest.dim):
                yield ids, self._project(xb)

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
        manifest = self.require_manifest()
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
            self.set_manifest(manifest)
        return manifest

    def _write_vectors(self, built: vectors.Built) -> None:
        vectors.write(self.vectors_path, built, catalog_id=self.catalog_id)
        if not self.catalog.get_meta("vectors_written"):
            self.catalog.set_meta("vectors_written", "1")

    def rebuild_vectors(self, quiet: bool = False) -> int:
        """Rebuild the cache from every stored vector (after an index-type change, repair).

        `quiet`: a planned rebuild (optimize), so no notice about it."""
        before = len(self.notices)
        self._base = self._rebuild("rebuilt on request")
        if quiet:
            del self.notices[before:]
        return self._base.generation

    # -- reduction ------------------------------------------------------------------------

    def reduction(self) -> reduction.Reduction | None:
        """The learned PCA reduction of the cache, or None (none asked for, or not yet learned).

        Raises CatalogCorrupt when the stored matrix does not match the manifest's checksum.
        """
        manifest = self.require_manifest()
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

    def _project(self, xb: np.ndarray) -> np.ndarray:
        """Full (n, dim) vectors as the cache holds them: reduced, or as they are.

        Call `reduction()` before opening a catalogue snapshot: it may read the catalogue."""
        learned = self.reduction()
        return xb if learned is None else learned.apply(xb)

    def _learn_reduction(self) -> None:
        """Learn the reduction the manifest asks for, once the collection is large enough.

        The matrix is stored in the catalogue with the manifest that records its checksum, in
        one transaction; the cache is then rebuilt by `sync_vectors` (its dimension changed).
        """
        manifest = self.require_manifest()
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
        self.set_manifest(manifest, {REDUCTION_KEY: learned.to_bytes()})
        self._reduction, self._reduction_sha = learned, manifest.reduction["sha256"]

    def rerank_factor(self) -> int:
        """Candidates fetched per wanted result and re-scored with the full stored vectors
        (0: the cache's own scores are final). Default: RERANK_DEFAULT for lossy caches."""
        manifest = self.require_manifest()
        if manifest.rerank is not None:
            return manifest.rerank
        if vectors.layout(self.base().index) == "ivfpq":
            return RERANK_DEFAULT["ivfpq"]
        return RERANK_DEFAULT["reduced"] if manifest.reduced else 0

    # -- search -----------------------------------------------------------------------------

    def search(
        self, xq: np.ndarray, k: int, allow: np.ndarray | None = None
    ) -> list[list[Neighbour]]:
        """Top-k neighbours of each query row of `xq` (nq, d) float32, best first.

        `allow` (int64 ids) restricts results to those ids. Sees one catalogue snapshot.
        """
        manifest = self.require_manifest()
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        for attempt in range(2):
            base = self.base()  # before the snapshot: its generation <= the snapshot's
            rerank = self.rerank_factor()
            self.reduction()
            with self.catalog.read() as conn:
                delta = self.catalog.delta(conn, base.generation, manifest.dim)
                exclude = np.union1d(delta.stale, base.tombstones)
                if rerank:
                    # Candidates from the cache, final scores from the full stored vectors
                    # (the changed rows are searched exactly in the same full space).
                    D, I = vectors.search(
                        base.index, self._project(xq), k * rerank, exclude=exclude, allow=allow
                    )
                    D, I = self._rescore(conn, xq, I, k)
                    D, I = merge_topk(D, I, *_search_delta(delta, xq, k, allow))
                else:
                    xc = self._project(xq)
                    D, I = vectors.search(base.index, xc, k, exclude=exclude, allow=allow)
                    changed = replace(delta, vectors=self._project(delta.vectors))
                    D, I = merge_topk(D, I, *_search_delta(changed, xc, k, allow))
                paths = self.catalog.paths(conn, I[I >= 0].tolist())
            if len(paths) == len(np.unique(I[I >= 0])) or attempt:
                break
            # A sound file that is not this index's cache (copied from another index, say).
            self._base = self._rebuild("it holds ids the catalogue does not")
        return [
            [
                Neighbour(int(i), paths[int(i)], float(s))
                for s, i in zip(d_row, i_row, strict=True)
                if i >= 0
            ]
            for d_row, i_row in zip(D, I, strict=True)
        ]

    def _rescore(
        self, conn: Any, xq: np.ndarray, I: np.ndarray, k: int, most: int = 16384
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of candidate ids `I` (nq, c) against full queries `xq` (nq, dim),
        read from the catalogue; the best k per row: D (nq, k) float32, I (nq, k), -1 = none.

        Queries go a few at a time, so memory holds at most `most` full vectors (128 MB at
        2048-d; a batch of 1000 queries x 352 candidates read at once peaked at 5.8 GiB)."""
        dim = self.require_manifest().dim
        chunk = max(1, most // max(I.shape[1], 1))
        D = np.full(I.shape, -np.inf, np.float32)
        for start in range(0, len(I), chunk):
            ids = I[start : start + chunk]
            found, matrix = self.catalog.vectors_matrix(conn, ids[ids >= 0].tolist(), dim)
            # found is sorted; an extra zero row stands for -1 and for ids no longer stored
            table = np.concatenate([matrix, np.zeros((1, dim), np.float32)])
            pos = np.searchsorted(found, ids)
            present = (ids >= 0) & (pos < len(found))
            present[present] = found[pos[present]] == ids[present]
            pos = np.where(present, pos, len(found))
            scores = np.matmul(table[pos], xq[start : start + chunk, :, None])[..., 0]
            D[start : start + chunk] = np.where(present, scores, -np.inf)
        order = np.argsort(-D, axis=1, kind="stable")[:, :k]
        D, I = np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)
        return D, np.where(np.isfinite(D), I, -1)

    def effective_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids in the cache file, ids the catalogue holds), both sorted int64, for checks."""
        manifest = self.require_manifest()
        base = self.base()
        with self.catalog.read() as conn:
            delta = self.catalog.delta(conn, base.generation, manifest.dim)
            stored = np.sort(self.catalog.all_vectors(conn, manifest.dim)[0])
        cached = vectors.stored_ids(base.index)
        gone = np.union1d(delta.stale, base.tombstones)
        cached = np.sort(np.concatenate([cached[~np.isin(cached, gone)], delta.ids]))
        return cached, stored

    def disk_bytes(self) -> int:
        total = 0
        for name in os.listdir(self.directory):
            try:
                total += os.path.getsize(os.path.join(self.directory, name))
            except OSError:
                pass
        return total


def _search_delta(
    delta: Delta, xq: np.ndarray, k: int, allow: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over the rows changed since the cache was written."""
    ids, xb = delta.ids, delta.vectors
    if allow is not None and len(ids):
        keep = np.isin(ids, allow)
        ids, xb = ids[keep], xb[keep]
    return exact_search(xb, ids, xq, k)


def exact_search(
    xb: np.ndarray, ids: np.ndarray, xq: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by inner product: D (nq, k) float32, I (nq, k) int64, -1 = none."""
    nq = len(xq)
    D = np.full((nq, k), -np.inf, np.float32)
    I = np.full((nq, k), -1, np.int64)
    if len(ids) == 0 or k == 0:
        return D, I
    scores = xq.astype(np.float32) @ xb.T
    take = min(k, len(ids))
    top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    D[:, :take] = np.take_along_axis(scores, top, axis=1)
    I[:, :take] = ids[top]
    return D, I


def merge_topk(
    D1: np.ndarray, I1: np.ndarray, D2: np.ndarray, I2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two top-k result sets row by row, best scores first."""
    k = D1.shape[1]
    D = np.concatenate([D1, D2], axis=1)
    I = np.concatenate([I1, I2], axis=1)
    order = np.argsort(-D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)


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
        "index_params": vectors.describe(base.index),
        "reduction": _describe_reduction(manifest),
        "rerank": index_dir.rerank_factor(),
        "generation": generation,
        "vectors_generation": base.generation,
        "bytes_on_disk": index_dir.disk_bytes(),
    }
