"""One Milvus collection, as calls on a pymilvus client: connecting, the schema and index a
collection is created with, writing rows, listing ids, one batch of searches.

With `store.milvus` the home of pymilvus; that module keeps the collection in step with the
catalogue (when to build, patch or rebuild, what a search asks), this one knows how Milvus is
spoken to. The collection holds, per catalogue id:

    id        INT64 primary key (the catalogue id)
    vector    FLOAT_VECTOR (dim) the stored vector (float16 ones widened exactly), metric IP
    path      VARCHAR  the raw path bytes as hex (any bytes; a folder prefix stays a prefix)
    format    VARCHAR  Pillow's format name, upper case ("" when unknown)
    size, width, height, mtime_ns   INT64 (MISSING when unknown)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import defaults
from ..errors import StorageError
from . import vectors
from .milvus_spec import known, open_error, require

#: Milvus's largest top-k per search; candidate lists are capped to it.
MAX_TOPK = 16384
#: Our index types -> Milvus's. Milvus Lite 3.2 builds FLAT, HNSW, IVF_FLAT and IVF_SQ8 but
#: not IVF_PQ (milvus_lite/index/factory.py: "reserved for a future phase"), so on a Lite file
#: IVF-PQ falls back to IVF_SQ8, the nearest compressed type, with a notice.
MILVUS_TYPES = {"flat": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT", "ivfpq": "IVF_PQ"}
LITE_FALLBACK = {"IVF_PQ": "IVF_SQ8"}
#: Rows sent per insert/upsert call.
BATCH = 2048
#: Reads and writes: pymilvus creates collections "Bounded" (reads may miss the last seconds
#: of writes): on a Milvus 2.3 server a count or search right after a sync saw none of its
#: rows. "Strong" sees every write acknowledged before the read, but waits for the server's
#: next time tick: 200 ms per call there (3 ms otherwise). So: the collection is made Strong
#: (for other clients); the count taken when a process opens the collection (and after each
#: sync) is Strong, which brings the server up to every write made before it, by any process;
#: the other reads ask for "Session": this process's own writes (pymilvus records each one's
#: timestamp per collection) and the state that count saw.
STRONG = {"consistency_level": "Strong"}
SESSION = {"consistency_level": "Session"}


@dataclass(frozen=True)
class Collection:
    """What the searcher asks of a loaded cache: the generation the collection reflects,
    no tombstones, and `index.ntotal` (its row count, capped at MAX_TOPK)."""

    generation: int
    count: int
    tombstones: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def index(self) -> Any:
        return self

    @property
    def ntotal(self) -> int:
        return min(self.count, MAX_TOPK)


def connect(uri: str, timeout: float | None = None, index: str | None = None) -> Any:
    """A MilvusClient for `uri` (a Lite .db file or http://HOST:19530) of the index folder
    `index`; raises UsageError when pymilvus is missing, StorageError (one line) when Milvus
    cannot be opened."""
    require()
    from pymilvus import MilvusClient

    # pymilvus logs each failed call at ERROR on stderr, milvus_lite a failed start with its
    # traceback; the failure reaches the user once, as our error.
    for name in ("pymilvus", "milvus_lite"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return MilvusClient(uri, timeout=timeout)
    except Exception as exc:  # pymilvus raises its own classes, grpc's, or OSError
        raise StorageError(open_error(uri, exc, index)) from None


def probe(uri: str) -> None:
    """Raise StorageError (one line) when the Milvus server at `uri` cannot be reached: checked
    before a new index is made, so a wrong URI costs no embedding run."""
    connect(uri, timeout=defaults.MILVUS_CONNECT_SECONDS).close()


def milvus_type(index_type: str, lite: bool) -> str:
    """The Milvus index type our `index_type` stands for (on Milvus Lite: its fallback)."""
    wanted = MILVUS_TYPES.get(index_type, "FLAT")
    return LITE_FALLBACK.get(wanted, wanted) if lite else wanted


def index_params(manifest: Any, n: int) -> tuple[str, dict[str, Any]]:
    """Milvus's index type and build parameters for the manifest's type over n vectors."""
    kind = manifest.index_type
    params = vectors.resolve(kind, n, manifest.dim, manifest.index_params)
    if kind == "hnsw":
        return "HNSW", {"M": int(params["M"]), "efConstruction": int(params["efConstruction"])}
    if kind == "ivf":
        return "IVF_FLAT", {"nlist": int(params["nlist"])}
    if kind == "ivfpq":
        keys = ("nlist", "m", "nbits")
        return "IVF_PQ", {key: int(params[key]) for key in keys}
    return "FLAT", {}


def create(
    client: Any, name: str, dim: int, index_type: str, params: dict[str, Any], lite: bool
) -> None:
    """Create the collection `name` (the schema above) with a `index_type` index, metric IP.

    pymilvus 3 sends the build parameters as separate keys (nlist=64), which a Milvus server
    reads but Milvus Lite 3.2 ignores: it reads only a JSON `params` key (the older wire
    form) and built 128 lists whatever nlist said. On Lite they go in that form too."""
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("path", DataType.VARCHAR, max_length=65535)
    schema.add_field("format", DataType.VARCHAR, max_length=64)
    for column in ("size", "width", "height", "mtime_ns"):
        schema.add_field(column, DataType.INT64)
    index = client.prepare_index_params()
    if lite and params:
        params = {**params, "params": dict(params)}
    index.add_index("vector", index_type=index_type, metric_type="IP", params=params)
    client.create_collection(name, schema=schema, index_params=index, **STRONG)


def seal(client: Any, name: str) -> None:
    """Flush the collection after a bulk load: a Milvus server builds the vector index on
    sealed segments only (growing ones are searched by brute force)."""
    client.flush(name)


def described_type(client: Any, name: str) -> str | None:
    """The collection's Milvus index type (None: it has no index)."""
    try:
        return str(client.describe_index(name, "vector")["index_type"])
    except Exception:  # no index: the collection is damaged
        return None


def upsert(
    client: Any, name: str, ids: np.ndarray, xb: np.ndarray, rows: Mapping[int, Any]
) -> None:
    """Write rows `ids` (n,) with vectors `xb` (n, dim) and their catalogue fields `rows`
    (`Catalog.image_rows`: id -> path, format, size, width, height, mtime_ns); an id with no
    row (deleted meanwhile) is skipped."""
    data = []
    for i, vector in zip(ids.tolist(), np.asarray(xb, np.float32), strict=True):
        row = rows.get(i)
        if row is None:
            continue
        data.append(
            {
                "id": i,
                "vector": vector.tolist(),
                "path": bytes(row.path).hex(),
                "format": (row.format or "").upper(),
                "size": known(row.size),
                "width": known(row.width),
                "height": known(row.height),
                "mtime_ns": known(row.mtime_ns),
            }
        )
        if len(data) >= BATCH:
            client.upsert(name, data)
            data = []
    if data:
        client.upsert(name, data)


def held_ids(client: Any, name: str) -> np.ndarray:
    """Every id in the collection (int64, unsorted)."""
    ids: list[int] = []
    iterator = client.query_iterator(
        name, batch_size=BATCH * 4, filter="", output_fields=["id"], **SESSION
    )
    try:
        while batch := iterator.next():
            ids += [int(row["id"]) for row in batch]
    finally:
        iterator.close()
    return np.array(ids, np.int64)


def search(
    client: Any, name: str, xc: np.ndarray, k: int, expr: str, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (k <= MAX_TOPK) for queries `xc` (nq, dim) float32 under the filter `expr`:
    D (nq, k) float32, I (nq, k) int64, -1 = none; queries sent in batches Milvus accepts."""
    nq = len(xc)
    D = np.full((nq, k), -np.inf, np.float32)
    I = np.full((nq, k), -1, np.int64)
    step = max(1, MAX_TOPK * 4 // max(k, 1))
    for start in range(0, nq, step):
        found = client.search(
            name,
            data=xc[start : start + step].tolist(),
            limit=k,
            filter=expr,
            search_params={"metric_type": "IP", "params": params},
            **SESSION,
        )
        for row, hits in enumerate(found, start):
            for col, hit in enumerate(hits):
                D[row, col], I[row, col] = hit["distance"], hit["id"]
    return D, I
