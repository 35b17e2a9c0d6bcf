"""PCA reduction (`--dim`, whitened or not) and re-ranking with the full stored vectors.

The vectors live near a 12-d subspace of a 64-d space (plus noise), so a reduction to 16
dimensions keeps almost all of their variance and neighbours; exact brute force in the full
space is the ground truth.
"""

from __future__ import annotations

import base64
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from test_ann import exact, make_index, recall, result_ids, row, synthetic_manifest

from retrieval.errors import CatalogCorrupt, IndexIncompatible, UsageError
from retrieval.ops import checking
from retrieval.ops.storage import configure
from retrieval.specs import StorageOptions
from retrieval.store import reduction, vectors
from retrieval.store.index_dir import REDUCTION_KEY, IndexDir, index_summary
from retrieval.store.searcher import rescore

D_IN = 64
DIM = 16


def low_rank(n: int, seed: int = 0, rank: int = 12, noise: float = 0.05) -> np.ndarray:
    """(n, D_IN) unit vectors: clustered points in a random `rank`-d subspace, plus noise."""
    rng = np.random.default_rng(1000)  # the same subspace and centres for every seed
    basis = np.linalg.qr(rng.standard_normal((D_IN, rank)))[0].T  # (rank, D_IN)
    centres = rng.standard_normal((30, rank))
    draw = np.random.default_rng(seed)
    z = centres[draw.integers(0, 30, n)] + 0.5 * draw.standard_normal((n, rank))
    x = z @ basis + noise * draw.standard_normal((n, D_IN))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reduced_manifest(whiten: bool = False, **kw):
    """A new index's manifest asking for a reduction to DIM (what `--dim DIM` records)."""
    return replace(synthetic_manifest(d=D_IN, **kw), reduction={"dim": DIM, "whiten": whiten})


# -- the reduction itself -----------------------------------------------------------------------


@pytest.mark.parametrize("whiten", [True, False])
def test_learn_keeps_the_variance_and_is_deterministic(whiten: bool) -> None:
    x = low_rank(3000)
    learned = reduction.learn([x[:1000], x[1000:]], len(x), DIM, whiten)
    again = reduction.learn([x[:1000], x[1000:]], len(x), DIM, whiten)
    assert learned.describe()["sha256"] == again.describe()["sha256"]
    # other batches round differently: the 12 signal directions come out the same (the
    # remaining 4 share almost equal noise eigenvalues, so any rotation of them is as good)
    one_batch = reduction.learn([x], len(x), DIM, whiten)
    np.testing.assert_allclose(one_batch.components[:, :12], learned.components[:, :12], atol=1e-3)
    assert (learned.dim, learned.from_dim, learned.trained_on) == (DIM, D_IN, 3000)
    assert learned.explained > 0.95

    y = learned.apply(x)
    assert y.shape == (3000, DIM) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    raw = (x - learned.mean) @ learned.components
    variances = raw.var(axis=0)
    if whiten:  # the 12 signal directions come out with unit variance
        np.testing.assert_allclose(variances[:12], 1.0, rtol=0.05)
    else:  # plain PCA: variances in decreasing order, components orthonormal
        assert (np.diff(variances) <= 1e-6).all()
        gram = learned.components.T @ learned.components
        np.testing.assert_allclose(gram, np.eye(DIM), atol=1e-5)

    back = reduction.Reduction.from_bytes(learned.to_bytes())
    np.testing.assert_array_equal(back.components, learned.components)
    assert back.describe() == learned.describe()


def test_learn_samples_large_collections() -> None:
    x = low_rank(4000)
    learned = reduction.learn([x], 200_000, DIM)  # as if x were 2% of the rows seen
    assert 0 < learned.trained_on < 4000


@pytest.mark.parametrize(
    ("dim", "rows", "message"),
    [(64, 500, "--dim must be between 1 and 63"), (8, 1, "needs vectors to learn from")],
)
def test_learn_refuses(dim: int, rows: int, message: str) -> None:
    with pytest.raises(reduction.ReductionError, match=message):
        reduction.learn([low_rank(rows)], rows, dim)


def test_from_bytes_refuses_garbage() -> None:
    with pytest.raises(reduction.ReductionError, match="unreadable"):
        reduction.Reduction.from_bytes(b"not an npz file")


def test_apply_refuses_the_wrong_width() -> None:
    learned = reduction.learn([low_rank(1500)], 1500, DIM)
    with pytest.raises(ValueError, match=r"expected \(n, 64\)"):
        learned.apply(np.zeros((2, 32), np.float32))


# -- in an index ---------------------------------------------------------------------------------


def test_reduction_waits_for_enough_vectors_then_is_learned_once(tmp_path: Path) -> None:
    assert reduction.min_vectors(DIM) == 1000
    xb = low_rank(1500)
    make_index(tmp_path, reduced_manifest(), xb[:600])
    with IndexDir.open(tmp_path) as index_dir:
        manifest = index_dir.require_manifest()
        assert not manifest.reduced and manifest.reduction == {"dim": DIM, "whiten": False}
        pending = index_summary(index_dir)["reduction"]
        assert pending["learned"] == "no: once the index holds 1000 vectors"
        assert index_dir.base().index.d == D_IN  # full vectors until there are enough
        assert index_dir.rerank_factor() == 0

    with IndexDir.open_writer(tmp_path) as index_dir:
        index_dir.catalog.store_many([row(f"/q/{i:05d}.jpg", v) for i, v in enumerate(xb[600:])])
        index_dir.sync_vectors()
        learned = index_dir.require_manifest().reduction
        assert learned["trained_on"] == 1500 and learned["from_dim"] == D_IN
        assert index_dir.base().index.d == DIM

        # more vectors later are projected with the same matrix, not a new one
        index_dir.catalog.store_many([row("/r/extra.jpg", low_rank(1, seed=5)[0])])
        index_dir.sync_vectors()
        assert index_dir.require_manifest().reduction == learned
        assert index_dir.base().index.d == DIM


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf", "ivfpq"])
def test_reduced_search_reranks_with_the_full_vectors(tmp_path: Path, index_type: str) -> None:
    xb = low_rank(2000)
    params = {"ivf": {"nlist": 16, "nprobe": 4}, "ivfpq": {"nlist": 8, "nprobe": 8, "m": 8}}
    manifest = reduced_manifest(index_type=index_type, params=params.get(index_type))
    by_path = make_index(tmp_path, manifest, xb)
    ids = np.array([by_path[f"/p/{i:05d}.jpg".encode()] for i in range(len(xb))])
    xq = low_rank(40, seed=9)
    truth = exact(xb, ids, xq, 10)

    with IndexDir.open(tmp_path) as index_dir:  # a reader: loads the persisted cache
        assert index_dir.require_manifest().reduced
        assert vectors.layout(index_dir.base().index) == index_type
        assert index_dir.base().index.d == DIM
        assert index_dir.rerank_factor() == (32 if index_type == "ivfpq" else 8)
        found = index_dir.search(xq, 10)
    assert recall(result_ids(found), truth) >= 0.9
    # scores are the exact cosines of the full vectors, whatever the cache holds
    by_id = dict(zip(ids.tolist(), xb, strict=True))
    for query, hits in zip(xq, found, strict=True):
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        for hit in hits:
            assert hit.score == pytest.approx(float(by_id[hit.id] @ query), abs=1e-5)


def test_rerank_zero_keeps_reduced_scores_and_projects_changed_rows(tmp_path: Path) -> None:
    xb = low_rank(1200)
    manifest = replace(reduced_manifest(), rerank=0)
    make_index(tmp_path, manifest, xb)
    newcomer = low_rank(1, seed=77)[0]
    with IndexDir.open_writer(tmp_path) as index_dir:
        index_dir.catalog.store_many([row("/new/one.jpg", newcomer)])  # cache not synced
        assert index_dir.rerank_factor() == 0
        [hits] = index_dir.search(newcomer[None, :], 3)
        assert hits[0].path == b"/new/one.jpg"
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)  # its own projection
        learned = index_dir.reduction()
        assert learned is not None
        others = [h for h in hits[1:]]
        with index_dir.catalog.read() as conn:
            stored = index_dir.catalog.vectors_for(conn, [h.id for h in others], D_IN)
        for hit in others:  # scores in the reduced space, not the full one
            projected = learned.apply(np.stack([stored[hit.id], newcomer]))
            assert hit.score == pytest.approx(float(projected[0] @ projected[1]), abs=1e-5)


def test_ivfpq_without_reduction_reranks_by_default(tmp_path: Path) -> None:
    xb = low_rank(1000)
    manifest = synthetic_manifest(
        d=D_IN, index_type="ivfpq", params={"nlist": 8, "nprobe": 8, "m": 8}
    )
    by_path = make_index(tmp_path, manifest, xb)
    ids = np.array([by_path[f"/p/{i:05d}.jpg".encode()] for i in range(len(xb))])
    xq = low_rank(30, seed=3)
    with IndexDir.open(tmp_path) as index_dir:
        assert index_dir.rerank_factor() == 32
        reranked = index_dir.search(xq, 10)
    with IndexDir.open_writer(tmp_path) as index_dir:
        index_dir.set_manifest(replace(index_dir.require_manifest(), rerank=0))
        plain = index_dir.search(xq, 10)
    truth = exact(xb, ids, xq, 10)
    assert recall(result_ids(reranked), truth) > recall(result_ids(plain), truth)
    assert recall(result_ids(reranked), truth) >= 0.95


def test_info_and_check_know_the_reduction(tmp_path: Path) -> None:
    make_index(tmp_path, reduced_manifest(whiten=False), low_rank(1100))
    with IndexDir.open_writer(tmp_path) as index_dir:
        summary = index_summary(index_dir)
        assert summary["reduction"]["dim"] == DIM and summary["reduction"]["whiten"] is False
        assert summary["rerank"] == 8 and summary["dim"] == D_IN
    assert checking.check(tmp_path).problems == ()


def test_an_altered_reduction_is_reported_not_used(tmp_path: Path) -> None:
    make_index(tmp_path, reduced_manifest(), low_rank(1100))
    with sqlite3.connect(tmp_path / "catalog.sqlite") as db:
        other = reduction.learn([low_rank(1100, seed=4)], 1100, DIM)
        text = base64.b64encode(other.to_bytes()).decode()
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (text, REDUCTION_KEY))
    (tmp_path / "vectors.faiss").unlink()  # force a rebuild that needs the matrix
    with IndexDir.open(tmp_path) as index_dir:
        with pytest.raises(CatalogCorrupt, match="PCA reduction is missing or altered"):
            index_dir.search(low_rank(1), 3)


# -- options ---------------------------------------------------------------------------------------


def test_configure_checks_the_reduction_options() -> None:
    base = synthetic_manifest(d=D_IN)
    made = configure(base, "/x", StorageOptions(dim=DIM), new=True)
    assert made.reduction == {"dim": DIM, "whiten": False} and made.rerank is None
    assert configure(made, "/x", StorageOptions(dim=DIM)) == made  # asking for the same: fine
    assert configure(made, "/x", StorageOptions(rerank=3)).rerank == 3  # a query-time knob
    with pytest.raises(UsageError, match="between 1 and 63"):
        configure(base, "/x", StorageOptions(dim=64), new=True)
    with pytest.raises(UsageError, match="go with --dim"):
        configure(base, "/x", StorageOptions(whiten=False), new=True)
    with pytest.raises(UsageError, match="--rerank must be"):
        configure(made, "/x", StorageOptions(rerank=-1))
    with pytest.raises(IndexIncompatible, match="fixed when an index is made"):
        configure(made, "/x", StorageOptions(dim=8))
    with pytest.raises(IndexIncompatible, match="made with full vectors"):
        configure(base, "/x", StorageOptions(dim=8))
    whitened = configure(base, "/x", StorageOptions(dim=DIM, whiten=True), new=True)
    assert whitened.reduction == {"dim": DIM, "whiten": True}
    with pytest.raises(IndexIncompatible, match=r"to 16 dimensions \(whitened\)"):
        configure(whitened, "/x", StorageOptions(whiten=False))


# -- through the command line ---------------------------------------------------------------


def test_cli_import_with_dim_searches_like_the_full_index(tmp_path: Path) -> None:
    source, reduced, out = tmp_path / "source", tmp_path / "reduced", tmp_path / "all.parquet"
    make_index(source, synthetic_manifest(d=D_IN), low_rank(1200))
    assert run_cli("export", "--index", source, "-o", out).exit_code == 0
    made = run_cli("import", out, "--index", reduced, "--dim", "16", "--json")
    assert made.exit_code == 0, made.stderr

    info = run_cli("info", "--index", reduced, "--json").json()
    assert info["dim"] == D_IN and info["rerank"] == 8
    assert info["reduction"]["dim"] == 16 and info["reduction"]["whiten"] is False
    assert info["reduction"]["trained_on"] == 1200

    def like(directory: Path) -> list[dict]:
        args = ["search", "--index", directory, "-k", "5", "--format", "json"]
        for i in (3, 500, 1111):
            args += ["--like", f"/p/{i:05d}.jpg"]
        result = run_cli(*args)
        assert result.exit_code == 0, result.stderr
        return [[(h["path"], h["score"]) for h in q["results"]] for q in result.json()]

    mine, theirs = like(reduced), like(source)  # re-ranked: same neighbours, exact scores
    assert [[p for p, _ in q] for q in mine] == [[p for p, _ in q] for q in theirs]
    np.testing.assert_allclose(
        [[s for _, s in q] for q in mine], [[s for _, s in q] for q in theirs], atol=2e-6
    )
    assert run_cli("check", "--index", reduced).exit_code == 0
    again = tmp_path / "again.parquet"
    assert run_cli("export", "--index", reduced, "-o", again).exit_code == 0
    import pyarrow.parquet as pq

    full, back = pq.read_table(out), pq.read_table(again)
    assert back.schema.field("embedding").type.list_size == D_IN  # full vectors go out
    assert back.column("embedding").to_pylist() == full.column("embedding").to_pylist()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dim", "8"], "fixed when an index is made"),
        (["--whiten"], "fixed when an index is made"),
        (["--rerank", "-1"], "Invalid value for '--rerank'"),
    ],
)
def test_cli_refuses_changing_the_reduction(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "all.parquet"
    make_index(tmp_path / "source", synthetic_manifest(d=D_IN), low_rank(50))
    assert run_cli("export", "--index", tmp_path / "source", "-o", out).exit_code == 0
    assert run_cli("import", out, "--index", tmp_path / "r", "--dim", "16").exit_code == 0
    result = run_cli("import", out, "--index", tmp_path / "r", *args)
    assert result.exit_code != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) <= 3  # one line; click's usage errors add a usage and a hint line
    # the knob that may change does change
    assert run_cli("import", out, "--index", tmp_path / "r", "--rerank", "2").exit_code == 0
    assert run_cli("info", "--index", tmp_path / "r", "--json").json()["rerank"] == 2


def test_cli_refuses_a_dim_the_model_does_not_have(tmp_path: Path) -> None:
    out = tmp_path / "all.parquet"
    make_index(tmp_path / "source", synthetic_manifest(d=D_IN), low_rank(50))
    assert run_cli("export", "--index", tmp_path / "source", "-o", out).exit_code == 0
    result = run_cli("import", out, "--index", tmp_path / "r", "--dim", "64")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: --dim must be between 1 and 63 for synthetic's 64-d vectors, not 64"
    )
    assert run_cli("info", "--index", tmp_path / "r").exit_code != 0  # no index was made


def test_rescore_in_chunks_equals_rescore_at_once(tmp_path: Path) -> None:
    xb = low_rank(1200)
    make_index(tmp_path, reduced_manifest(), xb)
    xq = low_rank(25, seed=11)
    rng = np.random.default_rng(3)
    candidates = rng.integers(-1, 1300, size=(25, 40))  # -1 and ids not stored mixed in
    with IndexDir.open(tmp_path) as index_dir, index_dir.catalog.read() as conn:
        dim = index_dir.require_manifest().dim
        whole = rescore(index_dir.catalog, conn, xq, candidates, 10, dim)
        parts = rescore(index_dir.catalog, conn, xq, candidates, 10, dim, most=90)  # 2 a chunk
    np.testing.assert_array_equal(whole[1], parts[1])
    np.testing.assert_allclose(whole[0], parts[0], atol=1e-6)
    assert (whole[1] >= 0).all() and (whole[1] <= 1200).all()
