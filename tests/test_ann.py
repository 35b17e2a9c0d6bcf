"""Every index type (flat, hnsw, ivf, ivfpq; float32 and float16) through add, remove,
update, search, persist and reload; the `auto` rules; recall measured and tuned by optimize.

The vectors are seeded clusters in a small dimension, stored straight into the catalogue
(no model), with exact brute-force ground truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.errors import UsageError
from retrieval.ops import ann
from retrieval.ops.storage import configure, parse_size
from retrieval.specs import ModelInfo, Preprocess, StorageOptions, WeightsSpec
from retrieval.store import vectors
from retrieval.store.catalog import NewRow
from retrieval.store.index_dir import IndexDir, choose_layout
from retrieval.store.manifest import Manifest

DIM = 16
#: Small enough for speed, large enough that IVF lists and HNSW graphs are really used.
PARAMS = {
    "flat": {},
    "hnsw": {"M": 16, "efConstruction": 40, "efSearch": 32},
    "ivf": {"nlist": 16, "nprobe": 4},
    "ivfpq": {"nlist": 8, "nprobe": 8, "m": 8},
}
CASES = [(t, "float32") for t in vectors.INDEX_TYPES] + [
    (t, "float16") for t in ("flat", "hnsw", "ivf")
]


# -- helpers shared with test_filters.py and test_import.py -----------------------------------


def clustered(n: int, d: int = DIM, clusters: int = 20, seed: int = 0) -> np.ndarray:
    """(n, d) float32 unit vectors around `clusters` seeded centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, d)).astype(
        np.float32
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic_manifest(
    d: int = DIM,
    index_type: str = "flat",
    params: dict | None = None,
    dtype: str = "float32",
    policy: dict | None = None,
) -> Manifest:
    model = ModelInfo(
        "synthetic",
        WeightsSpec("untrained", identity="0"),
        Preprocess(32, 32, 32, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        d,
    )
    return Manifest(
        model=model,
        precision="fp32",
        vector_dtype=dtype,
        index_type=index_type,
        index_params=dict(params or {}),
        index_policy=policy or {"requested": index_type, "memory_bytes": None},
    )


def row(path: str, vector: np.ndarray, **meta) -> NewRow:
    return NewRow(
        path=path.encode(),
        size=meta.get("size", 1000),
        mtime_ns=meta.get("mtime_ns", 0),
        content_hash=None,
        width=meta.get("width", 100),
        height=meta.get("height", 100),
        format=meta.get("format", "JPEG"),
        vector=vector,
        error=None,
    )


def make_index(directory: Path, manifest: Manifest, xb: np.ndarray, prefix: str = "/p/") -> dict:
    """An index at `directory` holding `xb` under paths prefix + i; returns {path: id}."""
    with IndexDir.open_writer(directory) as index_dir:
        index_dir.set_manifest(manifest)
        index_dir.catalog.store_many([row(f"{prefix}{i:05d}.jpg", v) for i, v in enumerate(xb)])
        index_dir.sync_vectors()
        with index_dir.catalog.read() as conn:
            return index_dir.catalog.ids_for_paths(
                conn, [f"{prefix}{i:05d}.jpg".encode() for i in range(len(xb))]
            )


def exact(xb: np.ndarray, ids: np.ndarray, xq: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids by inner product (float64), best first."""
    order = np.argsort(-(xq.astype(np.float64) @ xb.astype(np.float64).T), axis=1, kind="stable")
    return ids[order[:, :k]]


def result_ids(found) -> list[list[int]]:
    return [[n.id for n in hits] for hits in found]


def recall(got: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(t)) / len(t) for g, t in zip(got, truth, strict=True)]))


# -- each type: add, search, remove, update, persist, reload --------------------------------------


@pytest.mark.parametrize(("index_type", "dtype"), CASES)
def test_index_type_lifecycle(tmp_path: Path, index_type: str, dtype: str) -> None:
    xb = clustered(800)
    manifest = synthetic_manifest(index_type=index_type, params=PARAMS[index_type], dtype=dtype)
    by_path = make_index(tmp_path, manifest, xb)
    ids = np.array([by_path[f"/p/{i:05d}.jpg".encode()] for i in range(len(xb))])
    xq = clustered(30, seed=7)
    floor = 0.5 if index_type == "ivfpq" else 0.8

    with IndexDir.open_writer(tmp_path) as index_dir:
        assert vectors.layout(index_dir.base().index) == index_type
        expected_class = {
            ("flat", "float16"): "IndexScalarQuantizer",
            ("hnsw", "float16"): "IndexHNSWSQ",
            ("ivf", "float16"): "IndexIVFScalarQuantizer",
        }.get((index_type, dtype))
        if expected_class:
            assert vectors.describe(index_dir.base().index)["faiss_class"] == expected_class
        found = index_dir.search(xq, 10)
        assert [len(h) for h in found] == [10] * 30
        assert recall(result_ids(found), exact(xb, ids, xq, 10)) >= floor

        # remove 60 rows: never returned again, by this process or by a reader
        gone = ids[:60]
        index_dir.catalog.remove(gone.tolist())
        index_dir.sync_vectors()
        base = index_dir.base()
        if index_type == "hnsw":
            np.testing.assert_array_equal(base.tombstones, np.sort(gone))  # graph kept
        else:
            assert len(base.tombstones) == 0 and vectors.count(base.index) == 740
        cached, stored = index_dir.effective_ids()
        np.testing.assert_array_equal(cached, stored)
        found = index_dir.search(xq, 10)
        assert [len(h) for h in found] == [10] * 30
        assert not set(np.concatenate(result_ids(found))) & set(gone.tolist())
        assert recall(result_ids(found), exact(xb[60:], ids[60:], xq, 10)) >= floor

        # update a row in place (same id, new vector) and add a new one
        moved = xq[0] * -1.0
        index_dir.catalog.store_many([row("/p/00500.jpg", moved), row("/p/new.jpg", xq[1])])
        index_dir.sync_vectors()
        if index_type == "hnsw":
            assert len(index_dir.base().tombstones) == 0  # an update compacts the graph
        top = index_dir.search(np.stack([moved, xq[1]]), 1)
        assert [hits[0].path for hits in top] == [b"/p/00500.jpg", b"/p/new.jpg"]
        before = index_dir.search(xq, 10)
        before_generation = index_dir.base().generation

    with IndexDir.open(tmp_path) as reader:  # reload from the file
        assert reader.base().generation == before_generation
        assert reader.notices == []  # loaded, not rebuilt
        assert vectors.layout(reader.base().index) == index_type
        assert result_ids(reader.search(xq, 10)) == result_ids(before)


def test_hnsw_compacts_when_tombstones_pass_the_ratio(tmp_path: Path) -> None:
    xb = clustered(400)
    by_path = make_index(tmp_path, synthetic_manifest(index_type="hnsw"), xb)
    ids = sorted(by_path.values())
    with IndexDir.open_writer(tmp_path) as index_dir:
        index_dir.catalog.remove(ids[:30])  # 7.5%: tombstoned
        index_dir.sync_vectors()
        assert len(index_dir.base().tombstones) == 30
        index_dir.catalog.remove(ids[30:50])  # 12.5%: rebuilt without them
        index_dir.sync_vectors()
        base = index_dir.base()
        assert len(base.tombstones) == 0 and vectors.count(base.index) == 350


def test_trained_types_stay_exact_until_there_are_enough_vectors(tmp_path: Path) -> None:
    small = clustered(40)
    make_index(tmp_path, synthetic_manifest(index_type="ivf"), small)
    with IndexDir.open_writer(tmp_path) as index_dir:
        assert vectors.layout(index_dir.base().index) == "flat"
        more = clustered(400, seed=3)
        index_dir.catalog.store_many([row(f"/q/{i}.jpg", v) for i, v in enumerate(more)])
        index_dir.sync_vectors()
        assert vectors.layout(index_dir.base().index) == "ivf"
        assert vectors.count(index_dir.base().index) == 440


# -- auto -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "d", "memory", "dtype", "expected"),
    [
        (0, 512, None, "float32", "flat"),
        (10_000, 512, 8 << 30, "float32", "flat"),
        (100_000, 512, 8 << 30, "float32", "hnsw"),
        (1_000_000, 512, 8 << 30, "float32", "ivf"),
        (1_000_000, 2048, 12 << 30, "float32", "ivf"),
        (1_000_000, 2048, 6 << 30, "float16", "ivf"),
        (1_000_000, 2048, 6 << 30, "float32", "ivfpq"),
        (1_000_000, 512, 1 << 30, "float32", "ivfpq"),
        (10_000, 512, 4 << 20, "float32", "ivfpq"),
    ],
)
def test_auto_rules(n: int, d: int, memory: int | None, dtype: str, expected: str) -> None:
    chosen, params = vectors.choose(n, d, memory, dtype)
    assert chosen == expected
    if chosen == "ivfpq":
        assert d % params["m"] == 0 and n * (params["m"] + 64) <= memory
    if chosen in ("ivf", "ivfpq") and n == 1_000_000:
        assert params["nlist"] == 1024 and params["nprobe"] == 32


def test_auto_refuses_what_cannot_fit() -> None:
    with pytest.raises(MemoryError):
        vectors.choose(1_000_000, 512, 1 << 20)
    manifest = synthetic_manifest()
    with pytest.raises(UsageError) as caught:
        choose_layout(manifest, 1_000_000, 1 << 20)
    assert str(caught.value) == (
        f"1000000 vectors of 16 dimensions need at least {1_000_000 * 65 + 1024 * 16 * 4} "
        "bytes even as IVF-PQ; raise --memory, use --vector-dtype float16, or --dim to reduce them"
    )


def test_auto_policy_re_chooses_as_the_collection_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vectors, "FLAT_MAX", 300)  # the rule's threshold, made small
    policy = {"requested": "auto", "memory_bytes": None}
    make_index(tmp_path, synthetic_manifest(policy=policy), clustered(200))
    with IndexDir.open_writer(tmp_path) as index_dir:
        assert index_dir.require_manifest().index_type == "flat"
        more = clustered(200, seed=5)
        index_dir.catalog.store_many([row(f"/q/{i}.jpg", v) for i, v in enumerate(more)])
        index_dir.sync_vectors()
        manifest = index_dir.require_manifest()
        assert (manifest.index_type, manifest.index_params) == ("hnsw", vectors.choose(400, DIM)[1])
        assert manifest.index_policy == policy
        assert vectors.layout(index_dir.base().index) == "hnsw"
    with IndexDir.open(tmp_path) as reader:
        assert reader.require_manifest().index_type == "hnsw"


def test_configure_records_the_request_and_keeps_the_dtype() -> None:
    asked = StorageOptions(index_type="ivf", memory=1 << 30, vector_dtype="float16")
    new = configure(synthetic_manifest(), "/x", asked, new=True)
    assert (new.index_type, new.vector_dtype) == ("ivf", "float16")
    assert new.index_policy == {"requested": "ivf", "memory_bytes": 1 << 30}
    assert configure(new, "/x") is new  # no options: unchanged
    with pytest.raises(Exception) as caught:
        configure(new, "/x", StorageOptions(vector_dtype="float32"))
    assert str(caught.value).startswith(
        "the index at /x stores float16 vectors, not float32; copy it into a new index instead"
    )


def test_float16_halves_stored_vectors(tmp_path: Path) -> None:
    xb = clustered(300)
    make_index(tmp_path / "a", synthetic_manifest(dtype="float32"), xb)
    make_index(tmp_path / "b", synthetic_manifest(dtype="float16"), xb)
    with IndexDir.open(tmp_path / "a") as a, IndexDir.open(tmp_path / "b") as b:
        assert vectors.memory_bytes(b.base().index) < vectors.memory_bytes(a.base().index)
        with b.catalog.read() as conn:
            (blob,) = [r.vector for rows in b.catalog.metadata_rows(conn) for r in rows][:1]
        assert len(blob) == 2 * DIM
        found_a, found_b = a.search(xb[:20], 5), b.search(xb[:20], 5)
        assert [h[0].id for h in found_a] == [h[0].id for h in found_b]
        truth = np.array(result_ids(found_a))
        assert recall(result_ids(found_b), truth) >= 0.9
        assert abs(found_a[0][0].score - found_b[0][0].score) < 1e-3


# -- recall and optimize ----------------------------------------------------------------------


def test_optimize_tunes_nprobe_to_the_target_recall(tmp_path: Path) -> None:
    xb = clustered(3000, clusters=50)
    make_index(tmp_path, synthetic_manifest(index_type="ivf", params={"nprobe": 1}), xb)
    with IndexDir.open(tmp_path) as reader:
        low = ann.measure(reader, k=10, queries=100)
    assert low.recall < 0.95 and low.queries == 100
    with IndexDir.open_writer(tmp_path) as index_dir:
        report = ann.optimize(index_dir, "ivf", target_recall=0.95, queries=100)
    assert not report.rebuilt and report.after["type"] == "ivf"  # same type: tuned only
    assert report.recall is not None and report.recall.recall >= 0.95
    nprobe = report.tuned["nprobe"]
    assert 1 < nprobe <= report.after["nlist"] and report.after["nprobe"] == nprobe
    with IndexDir.open(tmp_path) as reader:  # the tuned knob is persisted
        assert reader.require_manifest().index_params["nprobe"] == nprobe
        assert vectors.describe(reader.base().index)["nprobe"] == nprobe
        again = ann.measure(reader, k=10, queries=100)
    assert again.recall == report.recall.recall
    assert set(report.to_dict()) == {"before", "after", "rebuilt", "tuned", "recall", "seconds"}


def test_optimize_auto_picks_flat_for_a_small_collection(tmp_path: Path) -> None:
    make_index(tmp_path, synthetic_manifest(index_type="hnsw"), clustered(500))
    with IndexDir.open_writer(tmp_path) as index_dir:
        report = ann.optimize(index_dir, "auto", queries=50)
        assert report.rebuilt and report.tuned == {}
        assert report.before["type"] == "hnsw" and report.after["type"] == "flat"
        assert report.recall is not None and report.recall.recall == 1.0
        assert index_dir.require_manifest().index_policy["requested"] == "auto"


def test_optimize_refuses_an_empty_index(tmp_path: Path) -> None:
    with IndexDir.open_writer(tmp_path) as index_dir:
        index_dir.set_manifest(synthetic_manifest())
        with pytest.raises(UsageError) as caught:
            ann.optimize(index_dir)
    assert str(caught.value).startswith(f"the index at {tmp_path} holds no vectors yet")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4G", 4 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29), ("1000", 1000), ("2gb", 2 << 30)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "-1G", "4X", "0"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_size(text)
    assert str(caught.value) == f"cannot read the size {text!r}; write it like 512M, 4G or 1.5GB"


# -- the file -----------------------------------------------------------------------------------


def test_file_keeps_tombstones_and_reads_format_1(tmp_path: Path) -> None:
    xb = clustered(100)
    index = vectors.build(xb, np.arange(100), "hnsw")
    path = str(tmp_path / "v.faiss")
    vectors.write(path, vectors.Built(index, 7, np.array([3, 5], np.int64)))
    back = vectors.read(path)
    assert back.generation == 7 and back.tombstones.tolist() == [3, 5]
    # a format-1 file (header without tombstones) written by the first release
    import hashlib

    import faiss

    payload = faiss.serialize_index(vectors.build(xb, np.arange(100)))
    digest = hashlib.sha256(payload.tobytes()).digest()
    with open(path, "wb") as fh:
        fh.write(vectors._HEADER_V1.pack(vectors.MAGIC, 1, 4, payload.nbytes, digest))
        fh.write(payload.tobytes())
    old = vectors.read(path)
    assert old.generation == 4 and len(old.tombstones) == 0 and old.index.ntotal == 100


def test_recall_counts_ties_at_the_kth_score_as_found(tmp_path: Path) -> None:
    # Every vector stored four times: the exact top-10 is full of equal scores, and which of
    # the tied ids a search returns is arbitrary. An exact index must still measure 1.0.
    xb = np.repeat(clustered(150, clusters=5), 4, axis=0)
    make_index(tmp_path, synthetic_manifest(index_type="flat"), xb)
    with IndexDir.open(tmp_path) as reader:
        report = ann.measure(reader, k=10, queries=200)
    assert report.queries == 200
    assert report.recall == 1.0


def test_recall_leaves_each_query_out_of_its_own_truth(tmp_path: Path) -> None:
    """Every stored vector is a query: recall@k is over its k nearest *other* vectors (the
    query finding itself is not a hit), checked against numpy on an approximate index."""
    xb = clustered(600, clusters=20, seed=4)
    ids = make_index(tmp_path, synthetic_manifest(index_type="ivf", params={"nprobe": 1}), xb)
    order = np.array([ids[f"/p/{i:05d}.jpg".encode()] for i in range(len(xb))])
    k = 10
    scores = xb.astype(np.float64) @ xb.astype(np.float64).T
    np.fill_diagonal(scores, -np.inf)  # never its own neighbour
    truth = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    with IndexDir.open(tmp_path) as reader:
        assert vectors.layout(reader.base().index) == "ivf"
        found = reader.search(xb, k + 1)
        report = ann.measure(reader, k=k, queries=len(xb))
    hits = 0
    for i, hits_i in enumerate(found):
        got = [h.id for h in hits_i if h.id != order[i]][:k]
        hits += len(set(got) & set(order[truth[i]].tolist()))
    assert report.queries == len(xb)
    assert report.recall == pytest.approx(hits / (len(xb) * k), abs=1e-9)
    assert report.recall < 0.99  # approximate: the check above can tell the two apart
