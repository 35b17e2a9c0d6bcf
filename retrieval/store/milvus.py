"""The search index in a Milvus collection instead of vectors.faiss (`--vectors milvus:URI`).

With `milvus_collection`, the home of pymilvus. `MilvusVectors` plays the part `VectorCache`
plays for FAISS (it is one, to the searcher, the range finder, `check` and `info`): a copy of
the catalogue's vectors kept in sync from it, never the source of truth (the collection's
schema and how Milvus is spoken to: `milvus_collection`).

Its properties record the catalogue id and the catalogue generation it reflects; searches
leave out the rows changed since and search those exactly (as for vectors.faiss), so a
collection a killed writer left behind still answers for the catalogue. `URI` is a local
file for Milvus Lite (one process at a time) or http://HOST:19530 for a server.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .. import defaults
from ..errors import CopiedIndex, RetrievalError, StorageError
from . import milvus_collection as mc
from . import milvus_owner as owner
from .files import WriterLock
from .milvus_collection import MAX_TOPK, MILVUS_TYPES, Collection, probe
from .milvus_spec import MISSING, expression, parse, require, resolve
from .vector_cache import VectorCache, choose_layout

if TYPE_CHECKING:
    from .index_dir import IndexDir

T = TypeVar("T")

#: A catalogue change larger than this (and than the collection) rebuilds the collection.
_PATCH_MAX = 50_000
_GEN, _CATALOG = "retrieval.generation", "retrieval.catalog_id"


def _reported(method: Callable[..., T]) -> Callable[..., T]:
    """`method`, with a failure of Milvus (pymilvus, grpc) raised as one StorageError line."""

    @functools.wraps(method)
    def call(self: MilvusVectors, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except RetrievalError:
            raise
        except Exception as exc:
            if not type(exc).__module__.startswith(("pymilvus", "grpc", "milvus_lite")):
                raise
            text = str(getattr(exc, "message", "") or exc).splitlines()[0]
            raise StorageError(f"Milvus at {self.uri} failed ({text})") from None

    return call


class MilvusVectors(VectorCache):
    """The collection of one index directory, in the role of its vector cache."""

    kind = "milvus"
    #: Range searches go through k-NN candidates re-scored with the stored vectors.
    exact_range = False

    def __init__(self, owner: IndexDir) -> None:
        super().__init__(owner)
        recorded = str(owner.require_manifest().vectors["uri"])
        self.uri = resolve(recorded, owner.directory)
        #: Whether copies of the index folder share the collection (not a Lite file inside it).
        self.shared = self.uri == recorded
        self.name = f"retrieval_{owner.catalog_id or 'index'}"
        self._client: Any = None
        self._state: Collection | None = None
        self._params: dict[str, Any] = {}

    @property
    def path(self) -> str:
        return f"{self.uri}#{self.name}"

    # -- the client ---------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = mc.connect(self.uri, index=self._owner.directory)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def exists(self) -> bool:
        return bool(self.client.has_collection(self.name))

    def properties(self) -> dict[str, str]:
        return dict(self.client.describe_collection(self.name).get("properties") or {})

    def row_count(self) -> int:
        found = self.client.query(self.name, filter="", output_fields=["count(*)"], **mc.STRONG)
        return int(found[0]["count(*)"])

    # -- loading, rebuilding, syncing ---------------------------------------------------------

    @_reported
    def base(self) -> Collection:  # type: ignore[override]
        """The collection's state, rebuilt first when it is missing or not this catalogue's."""
        if self._state is None:
            problem = self.problem()
            if problem:
                self._state = self._rebuild_locked(problem)
            else:
                self.client.load_collection(self.name)
                props = self.properties()
                self._state = Collection(int(props[_GEN]), self.row_count())
        return self._state

    @_reported
    def problem(self) -> str | None:
        """Why the collection cannot be used as it is, or None."""
        if not self.exists():
            return "missing"
        props = self.properties()
        self._verify_owner(props)
        if props.get(_CATALOG) != self._owner.catalog_id or _GEN not in props:
            return "it was not built from this catalogue"
        return None

    def _rebuild_locked(self, reason: str) -> Collection:
        """`_rebuild`, holding the writer lock (taken for the while when this process does not
        hold it: a reader); raises StorageError when a writer runs or the index is read-only."""
        if self._owner.lock is not None:
            return self._rebuild(reason)
        lock = WriterLock(os.path.join(self._owner.directory, defaults.LOCK_FILE))
        try:
            lock.acquire(wait=False)
        except (RetrievalError, OSError) as exc:
            raise StorageError(
                f"the Milvus collection {self.path} cannot be used ({reason}) and cannot be "
                f"rebuilt now ({exc}); run `retrieval check --repair --index "
                f"{self._owner.directory}`"
            ) from None
        try:
            return self._rebuild(reason)
        finally:
            lock.release()

    @_reported
    def _rebuild(self, reason: str) -> Collection:  # type: ignore[override]
        manifest = self.manifest()
        # read before `_finish` records the first write: a new index's first build is no news
        announce = reason != "missing" or bool(self.catalog.get_meta("vectors_written"))
        if self.exists():
            self._verify_owner(self.properties())
            self.client.drop_collection(self.name)
        with self.catalog.read() as conn:
            generation = self.catalog.generation(conn)
            n = self.catalog.counts(conn)["ok"]
            self._create(manifest, n)
            for ids, xb in self.catalog.iter_vectors(conn, manifest.dim):
                self._upsert(conn, ids, xb)
        mc.seal(self.client, self.name)
        self._finish(generation)
        if announce:
            self._owner.notices.append(
                f"the Milvus collection {self.path} could not be used ({reason}); rebuilt it "
                f"from the catalogue ({n} vectors)"
            )
        self._state = Collection(generation, n)
        return self._state

    def rebuild(self, reason: str = "rebuilt on request", quiet: bool = False) -> int:
        """Rebuild the collection from the catalogue; a reader does it only when no writer
        runs (a running writer syncs the collection itself: a reader's snapshot may be older
        than the collection, which is not damage)."""
        before = len(self._owner.notices)
        try:
            built = self._rebuild_locked(reason)
        except StorageError:
            if self._owner.lock is not None:
                raise
            return self.base().generation
        if quiet:
            del self._owner.notices[before:]
        return built.generation

    @_reported
    def sync(self) -> int:
        """Mirror the catalogue's changes since the collection's generation (upserts and
        deletions), or rebuild it when it is unusable, its index type must change or the
        change is large (a rebuild streams; a patch holds the whole change in RAM)."""
        manifest = self._relayout()
        reason = self.problem()
        if reason is None and self.index_type() != self.milvus_type():
            reason = "its index type changed"
        if reason:
            return self._rebuild(reason).generation
        base = self.base()
        with self.catalog.read() as conn:
            generation = self.catalog.generation(conn)
            if generation == base.generation:
                return generation
            if self.catalog.changed_count(conn, base.generation) > max(_PATCH_MAX, base.count):
                large = True
            else:
                large = False
                self._patch(conn, base.generation, manifest.dim)
        if large:
            return self.rebuild(quiet=True)
        self._finish(generation)
        self._state = Collection(generation, self.row_count())
        return generation

    def _patch(self, conn: Any, since: int, dim: int) -> None:
        """Delete the rows gone since generation `since`, upsert the ones changed."""
        delta = self.catalog.delta(conn, since, dim)
        gone = np.setdiff1d(delta.stale, delta.ids)
        if len(gone):
            self.client.delete(self.name, ids=gone.tolist())
        for start in range(0, len(delta.ids), mc.BATCH):
            stop = start + mc.BATCH
            self._upsert(conn, delta.ids[start:stop], delta.vectors[start:stop])

    def _create(self, manifest: Any, n: int) -> None:
        index_type, params = mc.index_params(manifest, n)
        if index_type != self.milvus_type():
            index_type, params = self.milvus_type(), {"nlist": params["nlist"]}
            self._owner.notices.append(
                f"Milvus Lite cannot build {manifest.index_type} ({MILVUS_TYPES['ivfpq']}); "
                f"the collection uses {index_type} instead (a Milvus server builds IVF_PQ)"
            )
        mc.create(self.client, self.name, manifest.dim, index_type, params, self.lite)

    @property
    def lite(self) -> bool:
        """Whether the collection is in a Milvus Lite file (not on a server)."""
        return self.uri.endswith(".db")

    def milvus_type(self) -> str:
        """The Milvus index type the manifest's type stands for (on Lite: its fallback)."""
        return mc.milvus_type(self.manifest().index_type, self.lite)

    def index_type(self) -> str | None:
        """The collection's Milvus index type (None: it has no index)."""
        return mc.described_type(self.client, self.name)

    def _upsert(self, conn: Any, ids: np.ndarray, xb: np.ndarray) -> None:
        """Write rows `ids` (n,) with vectors `xb` (n, dim) and their catalogue fields."""
        mc.upsert(self.client, self.name, ids, xb, self.catalog.image_rows(conn, ids.tolist()))

    @_reported
    def verify_owner(self) -> None:
        if self.shared and self.exists():
            self._verify_owner(self.properties())

    def _verify_owner(self, props: dict[str, str]) -> None:
        """Raise CopiedIndex when this index folder is a copy of the one that owns the shared
        collection (see `milvus_owner`)."""
        if not self.shared:
            return
        here = self._owner.directory
        mine = owner.tokens(self.catalog)
        reason = owner.refusal(props, here, self._owner.catalog_id, mine)
        if reason:
            raise CopiedIndex(owner.refused(reason, here, self.uri, self.name))

    def _finish(self, generation: int) -> None:
        """Record the generation the collection now reflects (and, when it is shared, this
        folder as its owner, with a new token when this process writes), then make it
        searchable."""
        props = {_GEN: str(generation), _CATALOG: self._owner.catalog_id}
        if self.shared:
            props[owner.OWNER] = owner.encode(self._owner.directory)
            mine = owner.tokens(self.catalog)
            if self._owner.lock is not None:
                props[owner.TOKEN] = owner.renewed(self.catalog)
            elif mine:
                props[owner.TOKEN] = mine[0]
        self.client.alter_collection_properties(self.name, properties=props)
        self.client.load_collection(self.name)
        self.catalog_written()

    def catalog_written(self) -> None:
        if self._owner.lock is not None and not self.catalog.get_meta("vectors_written"):
            self.catalog.set_meta("vectors_written", "1")

    # -- searching ----------------------------------------------------------------------------

    def rerank_factor(self) -> int:
        """Candidates re-scored per result: the manifest's, else 32 for IVF-PQ, else 0."""
        manifest = self.manifest()
        if manifest.rerank is not None:
            return manifest.rerank
        return 32 if manifest.index_type == "ivfpq" else 0

    @_reported
    def candidates(  # type: ignore[override]
        self,
        base: Any,
        xc: np.ndarray,
        k: int,
        exclude: np.ndarray,
        allow: np.ndarray | None,
        where: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of the collection for queries `xc` (nq, dim) float32: D (nq, k) float32,
        I (nq, k) int64, -1 = none. `where` (`Catalog.filter_ids`'s conditions) becomes a
        Milvus expression; without it, `allow` (ids) does; `exclude` ids are left out."""
        nq = len(xc)
        D = np.full((nq, k), -np.inf, np.float32)
        I = np.full((nq, k), -1, np.int64)
        limit = min(k, MAX_TOPK)
        if nq == 0 or limit == 0:
            return D, I
        parts = [expression(where)] if where else []
        if where is None and allow is not None:
            parts.append(f"id in {np.asarray(allow).tolist()}")
        if len(exclude):
            parts.append(f"not (id in {np.asarray(exclude).tolist()})")
        expr = " and ".join(f"({p})" for p in parts if p)
        params = self._search_params(limit)
        D[:, :limit], I[:, :limit] = mc.search(self.client, self.name, xc, limit, expr, params)
        return D, I

    def _search_params(self, k: int) -> dict[str, Any]:
        params = {**self.manifest().index_params, **self._params}
        kind = self.manifest().index_type
        if kind == "hnsw":
            return {"ef": max(int(params.get("efSearch", 64)), k)}
        if kind in ("ivf", "ivfpq"):
            return {"nprobe": int(params.get("nprobe", 16))}
        return {}

    def set_search_params(self, params: dict[str, Any]) -> None:
        self._params.update(params)

    @_reported
    def describe(self) -> dict[str, Any]:
        """The collection, its Milvus index type and parameters, for `info`."""
        base = self.base()
        index = self.client.describe_index(self.name, "vector")
        index = {**index, **(index.get("params") or {})}  # Milvus Lite nests them
        return {
            "type": self.manifest().index_type,
            "backend": "milvus",
            "uri": self.uri,
            "collection": self.name,
            "milvus_index": index.get("index_type"),
            "ntotal": base.count,
            # held by the Milvus server, not this process: the raw vectors and ids (estimate)
            "memory_bytes": base.count * (4 * self.manifest().dim + 8),
            # a server gives them as strings ("64"), Lite as numbers
            **{k: int(v) for k, v in index.items() if k in ("nlist", "M", "m", "nbits")},
        }

    # -- checking -----------------------------------------------------------------------------

    def effective_ids(self) -> tuple[np.ndarray, np.ndarray]:
        manifest = self.manifest()
        base = self.base()
        with self.catalog.read() as conn:
            delta = self.catalog.delta(conn, base.generation, manifest.dim)
            stored = np.sort(self.catalog.all_vectors(conn, manifest.dim)[0])
        held = self.held_ids(base)
        held = held[~np.isin(held, delta.stale)]
        return np.sort(np.concatenate([held, delta.ids])), stored

    @_reported
    def held_ids(self, built: Any = None) -> np.ndarray:
        """Every id in the collection (int64, unsorted)."""
        return mc.held_ids(self.client, self.name)

    @_reported
    def sample_differing(self, conn: Any, ids: np.ndarray) -> int:
        """How many of `ids`' vectors in the collection differ from the stored ones."""
        if not len(ids):
            return 0
        manifest = self.manifest()
        found, xb = self.catalog.vectors_matrix(conn, ids.tolist(), manifest.dim)
        rows = self.client.get(
            self.name, ids=found.tolist(), output_fields=["vector"], **mc.SESSION
        )
        held = {int(r["id"]): np.asarray(r["vector"], np.float32) for r in rows}
        differ = 0
        for i, vector in zip(found.tolist(), xb, strict=True):
            mine = held.get(i)
            if mine is None or not np.allclose(mine, vector, atol=1e-6, rtol=0):
                differ += 1
        return differ


__all__ = ["MISSING", "MilvusVectors", "choose_layout", "expression", "parse", "probe", "require"]
