"""`--vectors milvus:URI`: the search index in a Milvus collection instead of vectors.faiss,
kept in sync from the catalogue. Each backend-neutral test runs twice: on Milvus Lite (in
process, files under tmp_path) and on a real Milvus server (`milvus_server`: the 2.3
standalone binary of PyPI's `milvus` package, on loopback; skipped without that package).

Searches through the collection equal exact search (flat) or reach recall@10 >= 0.95 (ANN);
filters become Milvus expressions and give the FAISS index's results; deletions and updates
reach the collection; `check` finds a missing or damaged collection and `--repair` rebuilds
it; `search --like` and `dups` work on such an index unchanged.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, draw_image, make_photos, run_cli, save_image

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")
pytest.importorskip("pyarrow")

from bench_ann import export_table, mixture, synthetic_schema  # noqa: E402

from retrieval import Index, SearchFilter, StorageOptions  # noqa: E402
from retrieval.errors import IndexIncompatible, UsageError  # noqa: E402

D = 32
N = 6000
#: Where a parametrized test keeps its collection: a Lite file in the index, or the server.
BACKENDS = ["lite", "server"]


def milvus_option(request: pytest.FixtureRequest, backend: str) -> str:
    """`--vectors` for `backend`: a Milvus Lite file in the index, or the session's server."""
    if backend == "server":
        return f"milvus:{request.getfixturevalue('milvus_server')}"
    return "milvus:"


def client_of(directory: Path):
    """A pymilvus client of the index's collection (its Lite file or its server)."""
    from pymilvus import MilvusClient

    return MilvusClient(Index(directory).info()["index_params"]["uri"])


def release_lite_servers() -> None:
    """Stop the Milvus Lite servers this process started (one gRPC thread per .db file, kept
    until exit by milvus-lite itself), freeing their files' locks."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_all()


@pytest.fixture(autouse=True, scope="module")
def _nothing_left_running():
    yield
    release_lite_servers()


def write_export(path: Path, n: int, d: int = D) -> np.ndarray:
    """An export-format parquet of n clustered unit vectors with varied paths, formats, sizes
    and dates; returns the vectors (row i has catalogue id i + 1 after import)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    xb = np.concatenate([x for _, x in mixture(n, d, seed=1)])
    paths = [f"/bench/{i % 4}/img{i:07d}.jpg" for i in range(n)]
    table = export_table(synthetic_schema(d), paths, xb, 1)
    i = np.arange(n)
    columns = {
        "format": pa.array(np.where(i % 3 == 0, "PNG", "JPEG").tolist()),
        "size": pa.array(1000 + (i * 37) % 5000, pa.int64()),
        "mtime_ns": pa.array(1_600_000_000_000_000_000 + i * 1_000_000_000, pa.int64()),
    }
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    pq.write_table(table, path)
    return xb


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("milvus-data")
    return root / "all.parquet", write_export(root / "all.parquet", N)


def imported(directory: Path, file: Path, **storage: object) -> Index:
    index = Index(directory)
    index.import_files([file], storage=StorageOptions(**storage))  # type: ignore[arg-type]
    return index


def ids_scores(index: Index, xq: np.ndarray, k: int, filters: SearchFilter | None = None):
    found = index.search_vectors(xq, k=k, filters=filters)
    ids = [[h.id for h in q.results] for q in found]
    scores = [[h.score for h in q.results] for q in found]
    return ids, scores


def exact(xb: np.ndarray, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = xq @ xb.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order + 1, np.take_along_axis(scores, order, axis=1)


def queries(n: int = 20) -> np.ndarray:
    return np.concatenate([x for _, x in mixture(n, D, seed=7)])


@pytest.fixture(scope="module", params=BACKENDS)
def flat_pair(data, tmp_path_factory: pytest.TempPathFactory, request) -> tuple[Index, Index]:
    """The same export imported twice, flat: into vectors.faiss and into Milvus (Lite or the
    server)."""
    file, _ = data
    root = tmp_path_factory.mktemp("flat")
    faiss_index = imported(root / "faiss", file, index_type="flat")
    vectors = milvus_option(request, request.param)
    milvus_index = imported(root / "milvus", file, index_type="flat", vectors=vectors)
    return faiss_index, milvus_index


def test_a_flat_collection_searches_exactly(data, flat_pair) -> None:
    _, xb = data
    _, index = flat_pair
    info = index.info()
    assert info["index_params"]["backend"] == "milvus"
    assert info["index_params"]["milvus_index"] == "FLAT"
    assert info["images"] == N and info["index_params"]["ntotal"] == N
    xq = queries()
    ids, scores = ids_scores(index, xq, 10)
    want_ids, want_scores = exact(xb, xq, 10)
    assert ids == want_ids.tolist()
    np.testing.assert_allclose(scores, want_scores, atol=1e-5, rtol=0)
    home = index.manifest().vectors
    if home["uri"].startswith("http://"):
        assert info["index_params"]["uri"] == home["uri"]
        return
    # the file inside the index is recorded relative to it (the index can move)
    assert home == {"kind": "milvus", "uri": "vectors.milvus.db"}
    assert info["index_params"]["uri"].endswith("milvus/vectors.milvus.db")


@pytest.mark.parametrize(
    "filters",
    [
        SearchFilter(under=("/bench/1",)),
        SearchFilter(under=("/bench/1", "/bench/3/")),
        SearchFilter(formats=("png",)),
        SearchFilter(min_size=2000, max_size=3000),
        SearchFilter(modified_after=1_600_000_100.0, modified_before=1_600_002_000.0),
        SearchFilter(under=("/bench/2",), formats=("jpeg",), min_width=600, max_size=4000),
        SearchFilter(under=("/bench/9",)),
    ],
    ids=["under", "two-folders", "format", "size", "dates", "all", "nothing"],
)
def test_filters_give_the_faiss_index_results(flat_pair, filters: SearchFilter) -> None:
    faiss_index, milvus_index = flat_pair
    xq = queries(8)
    want_ids, want_scores = ids_scores(faiss_index, xq, 10, filters)
    ids, scores = ids_scores(milvus_index, xq, 10, filters)
    assert ids == want_ids
    np.testing.assert_allclose(scores, want_scores, atol=1e-5, rtol=0)


def test_filters_become_milvus_expressions() -> None:
    from retrieval.store.milvus_spec import MISSING, expression

    where = {"under": [b"/a/\xff"], "formats": ("PNG", "JPEG"), "max_size": 10}
    text = expression(where)
    assert 'path like "2f612fff2f%"' in text  # the folder's bytes as hex, then a separator
    assert 'format in ["PNG", "JPEG"]' in text
    assert f"size != {MISSING} and size <= 10" in text


@pytest.mark.parametrize(
    "backend, index_type",
    [*((b, t) for b in BACKENDS for t in ("hnsw", "ivf")), ("server", "ivfpq")],
)
def test_an_ann_collection_meets_recall(data, tmp_path: Path, request, backend, index_type) -> None:
    file, xb = data
    vectors = milvus_option(request, backend)
    index = imported(tmp_path / "ann", file, index_type=index_type, vectors=vectors)
    assert (
        index.info()["index_params"]["milvus_index"]
        == {"hnsw": "HNSW", "ivf": "IVF_FLAT", "ivfpq": "IVF_PQ"}[index_type]
    )
    # as for a FAISS index, `optimize` tunes nprobe / efSearch to recall@10 >= 0.95 (IVF's
    # default nprobe 16 of 64 lists gave 0.90-0.95 on these vectors, in FAISS too)
    tuned = index.optimize(index_type=index_type)
    assert not tuned.rebuilt
    xq = queries(50)
    ids, _ = ids_scores(index, xq, 10)
    want, _ = exact(xb, xq, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, want.tolist(), strict=True)])
    assert recall >= 0.95, tuned


def test_ivfpq_falls_back_on_milvus_lite_with_a_notice(data, tmp_path: Path) -> None:
    file, xb = data
    result = run_cli(
        "import", file, "--index", tmp_path / "pq", "--index-type", "ivfpq", "--vectors", "milvus:"
    )
    assert result.exit_code == 0, result.stderr
    assert "Milvus Lite cannot build ivfpq" in result.stderr
    index = Index(tmp_path / "pq")
    assert index.info()["index_params"]["milvus_index"] == "IVF_SQ8"
    xq = queries(20)
    ids, scores = ids_scores(index, xq, 10)
    want_ids, want_scores = exact(xb, xq, 10)
    # re-ranked with the catalogue's full vectors (32 x k candidates): exact scores
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, want_ids, strict=True)])
    assert recall >= 0.95
    checked = run_cli("check", "--index", tmp_path / "pq")
    assert checked.exit_code == 0, checked.stdout


# -- a real folder: updates, deletions, --like, dups, check ------------------------------------


def make_photos_index(tmp_path: Path, vectors: str) -> tuple[Path, list[Path], Path]:
    """(photos folder, its first six photos, index dir): six photos and a duplicate, indexed
    with `--vectors vectors`."""
    photos = tmp_path / "photos"
    originals = make_photos(photos, range(6))
    shutil.copy(originals[0], photos / "copy_of_0.jpg")  # an exact duplicate
    directory = tmp_path / "index"
    result = run_cli("index", photos, "--index", directory, *TINY, "--vectors", vectors)
    assert result.exit_code == 0, result.stderr
    return photos, originals, directory


@pytest.fixture(params=BACKENDS)
def photos_index(tmp_path: Path, request) -> tuple[Path, list[Path], Path]:
    return make_photos_index(tmp_path, milvus_option(request, request.param))


def collection_ids(directory: Path) -> list[int]:
    name = Index(directory).info()["index_params"]["collection"]
    client = client_of(directory)
    try:
        rows = client.query(name, filter="id >= 0", output_fields=["id"])
        return sorted(int(r["id"]) for r in rows)
    finally:
        client.close()


def like(directory: Path, image: Path, *more: str) -> list[dict]:
    result = run_cli("search", "--like", image, "--index", directory, "--format", "json", *more)
    assert result.exit_code == 0, result.stderr
    return result.json()


def test_like_and_dups_work_on_a_milvus_index(photos_index) -> None:
    photos, originals, directory = photos_index
    found = like(directory, originals[0], "-k", "3")
    hits = found[0]["results"] if isinstance(found, list) else found["results"][0]["results"]
    assert Path(hits[0]["path"]).name == "copy_of_0.jpg"
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    faiss_dir = directory.parent / "faiss-index"
    assert run_cli("index", photos, "--index", faiss_dir, *TINY).exit_code == 0
    for threshold in ("0.95", "0.99999"):
        groups = [dup_groups(d, threshold) for d in (directory, faiss_dir)]
        assert groups[0] == groups[1]
    assert frozenset({originals[0].name, "copy_of_0.jpg"}) in dup_groups(directory, "0.99999")


def dup_groups(directory: Path, threshold: str) -> set[frozenset[str]]:
    result = run_cli("dups", "--index", directory, "--threshold", threshold, "--json")
    assert result.exit_code == 0, result.stderr
    return {frozenset(Path(m["path"]).name for m in g["members"]) for g in result.json()["groups"]}


def test_deletions_and_updates_reach_the_collection(photos_index) -> None:
    photos, originals, directory = photos_index
    before = collection_ids(directory)
    assert len(before) == 7
    # deletion: the file removed, then prune
    gone_id = like(directory, originals[1], "-k", "1")
    originals[1].unlink()
    assert run_cli("prune", "--index", directory).exit_code == 0
    after = collection_ids(directory)
    assert len(after) == 6
    removed = set(before) - set(after)
    assert len(removed) == 1
    paths = [h["path"] for q in _results(like(directory, originals[2], "-k", "10")) for h in q]
    assert str(originals[1]) not in paths
    del gone_id
    # update: the file changed, then re-indexed; the collection holds the new vector
    save_image(draw_image(99), originals[2])
    result = run_cli("index", photos, "--index", directory, *TINY)
    assert result.exit_code == 0, result.stderr
    report = run_cli("check", "--index", directory)
    assert report.exit_code == 0, report.stdout + report.stderr
    changed = Path(directory.parent / "query.jpg")
    save_image(draw_image(99), changed)
    result = run_cli("search", changed, "--index", directory, "--format", "json", "-k", "1")
    assert result.exit_code == 0, result.stderr
    top = _results(result.json())[0][0]
    assert top["path"] == str(originals[2]) and top["score"] == pytest.approx(1.0, abs=1e-4)


def _results(found) -> list[list[dict]]:
    items = found if isinstance(found, list) else found["results"]
    return [q["results"] for q in items]


def test_check_reports_a_dropped_collection_and_repair_rebuilds_it(photos_index) -> None:
    _, originals, directory = photos_index
    name = Index(directory).info()["index_params"]["collection"]
    client = client_of(directory)
    client.drop_collection(name)
    client.close()
    result = run_cli("check", "--index", directory)
    assert result.exit_code == 1
    assert "is missing" in result.stdout
    result = run_cli("check", "--repair", "--index", directory)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "repaired" in result.stdout
    assert len(collection_ids(directory)) == 7
    assert run_cli("check", "--index", directory).exit_code == 0


def test_check_reports_rows_deleted_behind_its_back(photos_index) -> None:
    _, originals, directory = photos_index
    name = Index(directory).info()["index_params"]["collection"]
    ids = collection_ids(directory)
    client = client_of(directory)
    client.delete(name, ids=ids[:2])
    client.upsert(
        name,
        [
            {
                "id": ids[3],
                "vector": [0.5] * 96,
                "path": "00",
                "format": "",
                "size": 0,
                "width": 0,
                "height": 0,
                "mtime_ns": 0,
            }
        ],
    )
    client.close()
    result = run_cli("check", "--index", directory)
    assert result.exit_code == 1
    assert "lacks 2 of its vectors" in result.stdout
    result = run_cli("check", "--repair", "--index", directory)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert collection_ids(directory) == ids
    assert run_cli("check", "--index", directory).exit_code == 0
    # a changed vector alone is found by the sample
    client = client_of(directory)
    row = client.get(name, ids=[ids[3]])[0]
    client.upsert(name, [{**row, "vector": [0.5] * 96}])
    client.close()
    result = run_cli("check", "--index", directory)
    assert result.exit_code == 1 and "sampled vectors differ" in result.stdout


def test_vectors_is_fixed_when_an_index_is_made(flat_pair, data) -> None:
    file, _ = data
    faiss_index, milvus_index = flat_pair
    with pytest.raises(IndexIncompatible, match="--vectors is fixed"):
        faiss_index.import_files([file], storage=StorageOptions(vectors="milvus:"))
    with pytest.raises(IndexIncompatible, match="keeps its vectors in milvus"):
        milvus_index.import_files([file], storage=StorageOptions(vectors="faiss"))


def test_bad_vectors_options_say_what_to_do(tmp_path: Path, data, monkeypatch) -> None:
    file, _ = data
    result = run_cli("import", file, "--index", tmp_path / "a", "--vectors", "qdrant:x")
    assert result.exit_code == 1 and "use faiss or milvus:URI" in result.stderr
    result = run_cli("import", file, "--index", tmp_path / "b", "--vectors", "milvus:x.sqlite")
    assert result.exit_code == 1 and "must end in .db" in result.stderr
    with pytest.raises(UsageError, match="--dim"):
        Index(tmp_path / "c").import_files([file], storage=StorageOptions(vectors="milvus:", dim=8))
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # as if it were not installed
    result = run_cli("import", file, "--index", tmp_path / "d", "--vectors", "milvus:")
    assert result.exit_code == 1
    assert "pip install 'retrieval[milvus]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_search_rebuilds_a_dropped_collection_saying_so(photos_index) -> None:
    _, originals, directory = photos_index
    want = like(directory, originals[3], "-k", "4")
    name = Index(directory).info()["index_params"]["collection"]
    client = client_of(directory)
    client.drop_collection(name)
    client.close()
    result = run_cli("search", "--like", originals[3], "--index", directory, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert "could not be used (missing); rebuilt it from the catalogue" in result.stderr
    assert _results(result.json())[0][:3] == _results(want)[0][:3]


def test_a_lite_file_open_in_another_process_is_one_error_line(tmp_path: Path) -> None:
    _, originals, directory = make_photos_index(tmp_path, "milvus:")
    release_lite_servers()  # this process's own server holds the file until then
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pymilvus import MilvusClient; "
            "c = MilvusClient(sys.argv[1]); print('ready', flush=True); time.sleep(60)",
            str(directory / "vectors.milvus.db"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = run_cli("search", "--like", originals[0], "--index", directory)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "another process has it open" in lines[0], result.stderr


def test_export_reads_the_catalogue_and_its_import_is_a_faiss_index(
    flat_pair, data, tmp_path: Path
) -> None:
    _, xb = data
    _, milvus_index = flat_pair
    out = tmp_path / "out.parquet"
    report = milvus_index.export(out)
    assert report.rows == N
    copy = imported(tmp_path / "copy", out)
    assert copy.manifest().vectors == {}  # the export's manifest does not carry the URI
    assert copy.info()["index_params"].get("backend") is None
    ids, _ = ids_scores(copy, queries(5), 10)
    assert ids == exact(xb, queries(5), 10)[0].tolist()


def test_optimize_changes_the_collection_index_type(photos_index) -> None:
    _, originals, directory = photos_index
    want = like(directory, originals[4], "-k", "3")
    result = run_cli("optimize", "--index-type", "hnsw", "--index", directory)
    assert result.exit_code == 0, result.stderr
    assert Index(directory).info()["index_params"]["milvus_index"] == "HNSW"
    assert run_cli("check", "--index", directory).exit_code == 0
    assert _results(like(directory, originals[4], "-k", "3")) == _results(want)


def test_a_collection_behind_the_catalogue_still_answers_for_it(photos_index) -> None:
    """A writer killed after its catalogue commit, before the Milvus sync: searches leave out
    the rows changed since the collection's generation; the next write syncs it."""
    from retrieval.store.index_dir import IndexDir

    photos, originals, directory = photos_index
    gone = originals[5]
    with IndexDir.open_writer(directory) as index_dir, index_dir.catalog.read() as conn:
        (gone_id,) = index_dir.catalog.ids_for_paths(conn, [bytes(gone)]).values()
    with IndexDir.open_writer(directory) as index_dir:
        index_dir.catalog.remove([gone_id])  # committed; no sync_vectors()
    assert gone_id in collection_ids(directory)
    paths = [h["path"] for q in _results(like(directory, originals[0], "-k", "10")) for h in q]
    assert str(gone) not in paths and len(paths) == 5  # 7 images - the query - the removed
    assert run_cli("check", "--index", directory).exit_code == 0
    # the next run syncs: the removed id leaves the collection (the file, still on disk,
    # comes back under a new id)
    assert run_cli("index", photos, "--index", directory, *TINY).exit_code == 0
    held = collection_ids(directory)
    assert gone_id not in held and len(held) == 7
