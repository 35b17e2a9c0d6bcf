"""`retrieval bench`'s search timing: one query image against a synthetic index."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import defaults
from ..pathnames import display
from ..sources.decode import decode_image, read_file
from ..specs import Preprocess
from ..store.catalog import NewRow
from ..store.index_dir import IndexDir
from ..store.manifest import Manifest
from . import bench_probes as probes
from . import searching


def search_latency(
    embedder: Any, paths: Sequence[bytes], scratch: str, search_size: int, cap: float
) -> dict[str, float]:
    """Milliseconds for one query image against `search_size` random unit vectors.

    `embed`: read + decode + embed the query (a median-sized file of the corpus); `load`:
    open the index and load its vector file, as each `retrieval search` process does;
    `search`: k=10 search on the loaded index. `total` = all three; `warm` = embed + search,
    what a process that keeps the index open pays. Medians of 5 after a warm-up.
    """
    directory = os.path.join(scratch, "search-index")
    _synthetic_index(directory, embedder, search_size)
    usable = [p for p in paths if _decodes(p, embedder.preprocess, cap)]
    query = sorted(usable, key=probes.file_size)[len(usable) // 2]
    times: dict[str, list[float]] = {"embed": [], "load": [], "search": []}
    for attempt in range(6):  # the first is a warm-up (page cache, kernels)
        started = time.perf_counter()
        xq = searching.embed_queries(embedder, [os.fsdecode(query)], cap)
        embedded = time.perf_counter()
        with IndexDir.open(directory) as index_dir:
            index_dir.base()
            loaded = time.perf_counter()
            searching.search_vectors(index_dir, xq, [display(query)], k=defaults.TOP_K)
            finished = time.perf_counter()
        if attempt:
            times["embed"].append((embedded - started) * 1000)
            times["load"].append((loaded - embedded) * 1000)
            times["search"].append((finished - loaded) * 1000)
    result = {name: statistics.median(values) for name, values in times.items()}
    result["total"] = result["embed"] + result["load"] + result["search"]
    result["warm"] = result["embed"] + result["search"]
    result["vectors"] = float(search_size)
    result["query_megapixels"] = probes.megapixels_summary([query])["megapixels_mean"]
    return result


def _synthetic_index(directory: str, embedder: Any, count: int) -> None:
    """An index of `count` seeded random unit vectors, written through the catalogue."""
    rng = np.random.default_rng(0)
    with IndexDir.open_writer(directory) as index_dir:
        index_dir.set_manifest(Manifest(model=embedder.info, precision=embedder.precision))
        for start in range(0, count, 5000):
            xb = rng.standard_normal((min(5000, count - start), embedder.dim)).astype(np.float32)
            xb /= np.linalg.norm(xb, axis=1, keepdims=True)
            index_dir.catalog.store([_synthetic_row(start + i, v) for i, v in enumerate(xb)], {})
        index_dir.sync_vectors()


def _synthetic_row(n: int, vector: np.ndarray) -> NewRow:
    path = f"/synthetic/{n:08d}.jpg".encode()
    return NewRow(path, 1000 + n, n, n.to_bytes(16, "little"), 640, 480, "JPEG", vector, None)


def _decodes(path: bytes, preprocess: Preprocess, cap: float) -> bool:
    try:
        decode_image(read_file(path)[0], preprocess, cap)
    except Exception:  # noqa: BLE001 - any failure: try the next file
        return False
    return True
