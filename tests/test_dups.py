"""`retrieval dups` / `Index.dups`: groups against exact brute force on every index type and a
PCA reduction, chains vs cliques, keep rules, reference folders, --under, every output format,
bad input, empty and duplicate-free indexes.

Grouping is tested on seeded vectors imported in the export format (planted groups, ground
truth by brute force over the stored vectors); previews in the HTML on images drawn here.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import draw_image, run_cli, save_image

from retrieval import DupsReport, Index, StorageOptions, UsageError, defaults
from retrieval.ops.exchange import parquet_schema
from retrieval.specs import ModelInfo, Preprocess, WeightsSpec
from retrieval.store.index_dir import IndexDir
from retrieval.store.manifest import Manifest

DIM = 32
THRESHOLD = 0.95


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def toward(a: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector whose cosine with unit `a` is exactly `cosine`."""
    r = rng.standard_normal(a.shape).astype(np.float64)
    r -= (r @ a) * a
    r /= np.linalg.norm(r)
    return unit(cosine * a + np.sqrt(1 - cosine**2) * r)


def write_export(path: Path, paths: list[str], xb: np.ndarray, **meta: list[int]) -> Path:
    """An export-format parquet of `xb` (n, DIM) under `paths`; meta: size, mtime_ns, width,
    height lists (defaults 1000, row number, 100, 100)."""
    n = len(paths)
    model = ModelInfo(
        "synthetic-dups",
        WeightsSpec("untrained", identity="7"),
        Preprocess(32, 32, 32, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        xb.shape[1],
    )
    schema = parquet_schema(Manifest(model=model, precision="fp32"))
    table = pa.table(
        {
            "id": np.arange(n),
            "path": paths,
            "path_bytes": [p.encode() for p in paths],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(xb.ravel()), xb.shape[1]),
            "size": meta.get("size", [1000] * n),
            "mtime_ns": meta.get("mtime_ns", list(range(n))),
            "width": np.array(meta.get("width", [100] * n), np.int32),
            "height": np.array(meta.get("height", [100] * n), np.int32),
            "format": ["JPEG"] * n,
            "content_hash": [None] * n,
        },
        schema=schema,
    )
    pq.write_table(table, path)
    return path


def make(tmp_path: Path, paths: list[str], xb: np.ndarray, storage=None, **meta) -> Index:
    tmp_path.mkdir(parents=True, exist_ok=True)
    index = Index(tmp_path / "index")
    index.import_files([write_export(tmp_path / "in.parquet", paths, xb, **meta)], storage=storage)
    return index


def planted(seed: int = 0, n: int = 1200) -> tuple[list[str], np.ndarray]:
    """n unrelated unit vectors (cosines well below 0.9 at 32-d) plus planted groups: 30 pairs,
    10 triples (cliques, cosine 0.985-0.995 to a source) and 5 chains A~B~C (0.96 each link,
    A~C about 0.85)."""
    rng = np.random.default_rng(seed)
    base = unit(rng.standard_normal((n, DIM)))
    extra = []
    for i in range(30):
        extra.append(toward(base[i], rng.uniform(0.96, 0.99), rng))
    for i in range(30, 40):
        extra += [toward(base[i], rng.uniform(0.985, 0.995), rng) for _ in range(2)]
    for i in range(40, 45):
        b = toward(base[i], 0.96, rng)
        extra.append(b)
        c = toward(b, 0.96, rng)
        while float(c @ base[i]) >= THRESHOLD:
            c = toward(b, 0.96, rng)
        extra.append(c)
    xb = np.concatenate([base, np.array(extra)])
    return [f"/photos/{i // 100:02d}/img{i:05d}.jpg" for i in range(len(xb))], xb


def stored(index: Index) -> tuple[list[bytes], np.ndarray]:
    with IndexDir.open(index.directory) as index_dir, index_dir.catalog.read() as conn:
        rows = [r for batch in index_dir.catalog.metadata_rows(conn) for r in batch]
        dim = index_dir.require_manifest().dim
        return [r.path for r in rows], index_dir.catalog.decode([r.vector for r in rows], dim)


def brute_force(paths: list[bytes], xb: np.ndarray, threshold: float) -> set[frozenset[bytes]]:
    """Connected components (2+ members) of cosine >= threshold, exact (float64)."""
    x = xb.astype(np.float64)
    adjacent = (x @ x.T) >= threshold
    label = np.arange(len(x))
    while True:  # propagate the smallest label along edges until stable
        spread = np.where(adjacent, label[None, :], len(x)).min(axis=1)
        new = np.minimum(label, spread)
        new = new[new]
        if (new == label).all():
            break
        label = new
    groups: dict[int, set[bytes]] = {}
    for path, lab in zip(paths, label, strict=True):
        groups.setdefault(int(lab), set()).add(path)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def found(report: DupsReport) -> set[frozenset[bytes]]:
    return {frozenset(m.path for m in g.members) for g in report.groups}


# -- grouping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "storage",
    [
        StorageOptions(index_type="flat"),
        StorageOptions(index_type="hnsw"),
        StorageOptions(index_type="ivf"),
        StorageOptions(index_type="ivfpq"),
        StorageOptions(index_type="flat", vector_dtype="float16"),
        StorageOptions(index_type="hnsw", vector_dtype="float16"),
        StorageOptions(index_type="ivf", vector_dtype="float16"),
        StorageOptions(index_type="ivf", dim=8),
    ],
    ids=["flat", "hnsw", "ivf", "ivfpq", "flat-fp16", "hnsw-fp16", "ivf-fp16", "ivf-dim8"],
)
def test_every_index_type_finds_the_exact_groups(tmp_path: Path, storage) -> None:
    paths, xb = planted()
    index = make(tmp_path, paths, xb, storage)
    if storage.dim:
        assert index.info()["reduction"]["dim"] == 8  # the reduction was learned and is used
    truth = brute_force(*stored(index), THRESHOLD)
    assert len(truth) == 45  # every planted group, nothing else
    report = index.dups(threshold=THRESHOLD)
    assert found(report) == truth
    assert report.searched == len(paths)
    for group in report.groups:
        members = {m.path: m for m in group.members}
        assert len(members) == len(group.members)


def test_a_chain_shows_a_min_similarity_below_the_threshold(tmp_path: Path) -> None:
    paths, xb = planted()
    index = make(tmp_path, paths, xb)
    report = index.dups(threshold=THRESHOLD)
    sizes = [len(g.members) for g in report.groups]
    assert sizes == [3] * 15 + [2] * 30  # largest first
    x = {p.encode(): v.astype(np.float64) for p, v in zip(paths, xb, strict=True)}
    chains = cliques = 0
    for group in report.groups:
        vs = [x[m.path] for m in group.members]
        pairwise = min(float(a @ b) for i, a in enumerate(vs) for b in vs[i + 1 :])
        assert group.min_similarity == pytest.approx(pairwise, abs=1e-5)
        assert group.min_exact
        if len(vs) == 3:
            chains += group.min_similarity < THRESHOLD
            cliques += group.min_similarity >= THRESHOLD
        for m in group.members:  # score: exact cosine to the keeper
            assert m.score == pytest.approx(float(x[m.path] @ vs[0]), abs=1e-5)
    assert (chains, cliques) == (5, 10)


def test_no_duplicates_and_an_empty_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    index = make(tmp_path, [f"/p/{i}.jpg" for i in range(50)], unit(rng.standard_normal((50, 32))))
    report = index.dups()
    assert (report.groups, report.searched, report.duplicates) == ((), 50, 0)
    assert report.lines() == [report.summary()]
    empty = Index(tmp_path / "index")
    with IndexDir.open(empty.directory) as index_dir:  # every row gone: an empty index
        ids = [i for batch in index_dir.catalog.iter_paths() for i, _ in batch]
    with IndexDir.open_writer(empty.directory) as index_dir:
        index_dir.catalog.remove(ids)
        index_dir.sync_vectors()
    report = empty.dups()
    assert (report.groups, report.searched) == ((), 0)
    assert report.to_dict()["groups_found"] == 0


# -- keeping -----------------------------------------------------------------------------------


def five_copies(tmp_path: Path, keep_paths: list[str] | None = None, **meta) -> Index:
    rng = np.random.default_rng(1)
    a = unit(rng.standard_normal(DIM))
    xb = np.stack([a] + [toward(a, 0.99, rng) for _ in range(4)])
    names = ("bb.jpg", "a.jpg", "cccc.jpg", "d.jpg", "e.jpg")
    paths = keep_paths or [f"/x/{name}" for name in names]
    return make(tmp_path, paths, xb, **meta)


META = {
    "width": [100, 200, 200, 50, 200],
    "height": [100, 100, 100, 50, 100],
    "size": [500, 900, 900, 100, 800],
    "mtime_ns": [50, 40, 30, 10, 20],
}


@pytest.mark.parametrize(
    "keep, order",
    [
        # pixels ties b/c/e (20000), bytes ties b/c (900), oldest: c (30) before b (40)
        (defaults.DUPS_KEEP, ["cccc", "a", "e", "bb", "d"]),
        (("pixels",), ["a", "cccc", "e", "bb", "d"]),  # ties: path bytes
        (("fewest-pixels",), ["d", "bb", "a", "cccc", "e"]),
        (("bytes",), ["a", "cccc", "e", "bb", "d"]),
        (("smallest",), ["d", "bb", "e", "a", "cccc"]),
        (("oldest",), ["d", "e", "cccc", "a", "bb"]),
        (("newest",), ["bb", "a", "cccc", "e", "d"]),
        (("path",), ["a", "d", "e", "bb", "cccc"]),
        (("longest-path",), ["cccc", "bb", "a", "d", "e"]),
    ],
)
def test_keep_rules_order_the_members(tmp_path: Path, keep, order) -> None:
    report = five_copies(tmp_path, **META).dups(keep=keep)
    (group,) = report.groups
    names = [m.path.decode().rsplit("/", 1)[1].split(".")[0] for m in group.members]
    assert names == order
    assert [m.is_keeper for m in group.members] == [True, False, False, False, False]
    assert report.keep == tuple(keep)


def test_reference_members_are_all_kept(tmp_path: Path) -> None:
    ref = tmp_path / "originals"
    ref.mkdir()
    paths = [f"{ref}/bb.jpg", "/x/a.jpg", f"{ref}/sub/cccc.jpg", "/x/d.jpg", "/x/e.jpg"]
    report = five_copies(tmp_path, paths, **META).dups(reference=[ref])
    (group,) = report.groups
    assert [(m.path.decode(), m.is_keeper, m.is_reference) for m in group.members] == [
        (f"{ref}/sub/cccc.jpg", True, True),  # references first, in keep-rule order
        (f"{ref}/bb.jpg", True, True),
        ("/x/a.jpg", False, False),
        ("/x/e.jpg", False, False),
        ("/x/d.jpg", False, False),
    ]
    assert [m.path for m in group.others] == [b"/x/a.jpg", b"/x/e.jpg", b"/x/d.jpg"]
    assert report.duplicates == 3
    # a folder named like a reference but not under it is not one
    report = five_copies(tmp_path / "again", [p.replace("originals", "originals2") for p in paths])
    assert not any(m.is_reference for m in report.dups(reference=[ref]).groups[0].members)


# -- --under -----------------------------------------------------------------------------------


def test_under_keeps_groups_touching_the_folder_whole(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    base = unit(rng.standard_normal((40, DIM)))
    b = toward(base[0], 0.96, rng)
    c = toward(b, 0.96, rng)
    while float(c @ base[0]) >= THRESHOLD:
        c = toward(b, 0.96, rng)
    xb = np.concatenate([base, [b, c, toward(base[1], 0.98, rng)]])
    paths = [f"/other/{i}.jpg" for i in range(len(xb))]
    paths[0] = "/mine/a.jpg"  # a chain /mine/a ~ /other/b ~ /other/c; 1 ~ 42 all in /other
    index = make(tmp_path, paths, xb)
    assert len(index.dups().groups) == 2
    report = index.dups(under=["/mine"])
    assert found(report) == {frozenset([b"/mine/a.jpg", b"/other/40.jpg", b"/other/41.jpg"])}
    assert report.searched == 1
    assert report.under == (b"/mine",)
    assert index.dups(under=["/nowhere"]).groups == ()


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.01, 2.0])
def test_threshold_outside_0_1_is_a_usage_error(tmp_path: Path, threshold: float) -> None:
    index = five_copies(tmp_path)
    result = run_cli("dups", "--index", index.directory, "--threshold", str(threshold))
    assert result.exit_code == 2
    assert "Invalid value for '--threshold'" in result.stderr
    with pytest.raises(UsageError, match=r"outside \(0, 1\]"):
        index.dups(threshold=threshold)


def test_unknown_keep_rule_names_the_valid_ones(tmp_path: Path) -> None:
    index = five_copies(tmp_path)
    result = run_cli("dups", "--index", index.directory, "--keep", "pixels,biggest")
    assert result.exit_code == 2
    rules = "pixels, fewest-pixels, bytes, smallest, oldest, newest, path, longest-path"
    assert (
        f"Invalid value for '--keep': unknown keep rule 'biggest'; the rules are: {rules} "
        "(e.g. --keep pixels,bytes,oldest,path)"
    ) in result.stderr
    with pytest.raises(UsageError, match=f"unknown keep rule 'biggest'; the rules are: {rules}"):
        index.dups(keep=["biggest"])


def test_missing_reference_folder_is_an_error(tmp_path: Path) -> None:
    index = five_copies(tmp_path)
    result = run_cli("dups", "--index", index.directory, "--reference", tmp_path / "nope")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: reference folder {tmp_path / 'nope'} does not exist or is not a folder; "
        "name an existing folder whose files are always kept\n"
    )


def test_no_index_is_an_error(tmp_path: Path) -> None:
    result = run_cli("dups", "--index", tmp_path / "none")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")


# -- output formats ----------------------------------------------------------------------------


def test_json_schema(tmp_path: Path) -> None:
    index = five_copies(tmp_path, **META)
    result = run_cli("dups", "--index", index.directory, "--format", "json")
    assert result.exit_code == 0, result.stderr
    out = result.json()
    assert set(out) == {
        "threshold", "keep", "reference", "under", "searched", "groups_found",
        "images_in_groups", "duplicates", "seconds", "groups",
    }  # fmt: skip
    assert (out["threshold"], out["keep"], out["groups_found"], out["duplicates"]) == (
        0.88,
        ["pixels", "bytes", "oldest", "path"],
        1,
        4,
    )
    (group,) = out["groups"]
    assert set(group) == {"size", "min_similarity", "min_similarity_exact", "members"}
    first = group["members"][0]
    assert first == {
        "id": first["id"],
        "path": "/x/cccc.jpg",
        "size": 900,
        "width": 200,
        "height": 100,
        "mtime_ns": 30,
        "score": 1.0,
        "keep": True,
        "reference": False,
    }
    assert run_cli("dups", "--index", index.directory, "--json").json()["groups"] == out["groups"]


def test_csv_parses_one_row_per_member(tmp_path: Path) -> None:
    index = five_copies(tmp_path, **META)
    result = run_cli("dups", "--index", index.directory, "--format", "csv")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == [
        "group", "rank", "keep", "reference", "score", "path", "pixels", "bytes", "mtime", "id",
    ]  # fmt: skip
    assert [(r["group"], r["rank"], r["keep"], r["path"]) for r in rows] == [
        ("1", "1", "yes", "/x/cccc.jpg"),
        ("1", "2", "no", "/x/a.jpg"),
        ("1", "3", "no", "/x/e.jpg"),
        ("1", "4", "no", "/x/bb.jpg"),
        ("1", "5", "no", "/x/d.jpg"),
    ]
    assert (rows[0]["pixels"], rows[0]["bytes"], rows[0]["score"]) == ("20000", "900", "1.000000")
    assert rows[0]["mtime"] == "1970-01-01T00:00:00+00:00"
    assert 0.98 < float(rows[1]["score"]) < 1.0


def test_table_lists_groups_keeper_first(tmp_path: Path) -> None:
    index = five_copies(tmp_path, **META)
    result = run_cli("dups", "--index", index.directory)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"group 1: 5 images, min similarity 0\.9\d{3}", lines[0])
    assert lines[1] == "  keep 1.0000 /x/cccc.jpg"
    assert lines[2].startswith("  dup  0.9") and lines[2].endswith(" /x/a.jpg")
    assert lines[-1].startswith("1 group(s) of near-duplicates (cosine >= 0.88) among 5 image")


def test_html_embeds_one_preview_per_member_and_escapes_names(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    image = draw_image(4, (160, 120))
    names = ["a.jpg", "<b>&'x\".png", "c.jpg"]
    for name in names:
        save_image(image, photos / name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    rng = np.random.default_rng(6)
    a = unit(rng.standard_normal(DIM))
    xb = np.stack([a, toward(a, 0.99, rng), toward(a, 0.98, rng), toward(a, 0.985, rng)])
    paths = [str(photos / n) for n in [*names, "broken.jpg"]]
    index = make(tmp_path, paths, xb)
    out = tmp_path / "dups.html"
    result = run_cli("dups", "--index", index.directory, "--format", "html", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<img ") == 3  # one per decodable member
    assert page.count("src='data:image/jpeg;base64,") == 3
    assert "no preview: " in page  # the broken file, with the decoder's reason
    assert "<b>&'x" not in page
    assert "&lt;b&gt;&amp;&#x27;x&quot;.png" in page
    assert "http" not in page  # nothing fetched from elsewhere: readable offline


def test_html_refuses_an_image_over_the_megapixel_cap_like_the_indexer(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    save_image(draw_image(1, (3000, 2000)), photos / "big.png")  # 6 MP
    save_image(draw_image(1, (64, 48)), photos / "small.png")
    rng = np.random.default_rng(7)
    a = unit(rng.standard_normal(DIM))
    paths = [str(photos / "big.png"), str(photos / "small.png")]
    index = make(tmp_path, paths, np.stack([a, toward(a, 0.99, rng)]))
    out = tmp_path / "dups.html"
    args = ("dups", "--index", index.directory, "--format", "html", "-o", out)
    assert run_cli(*args, "--max-megapixels", "1").exit_code == 0
    page = out.read_text()
    assert page.count("<img ") == 1
    assert (
        "no preview: image is 6.0 MP, above the limit of 1 MP; raise it with --max-megapixels "
        "if the file is trusted"
    ) in page
    assert run_cli(*args).exit_code == 0
    assert out.read_text().count("<img ") == 2


def test_output_file_and_progress_stay_off_stdout(tmp_path: Path) -> None:
    index = five_copies(tmp_path, **META)
    out = tmp_path / "d.json"
    result = run_cli("dups", "--index", index.directory, "--json", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert '"groups_found": 1' in out.read_text()
    assert "1 group(s) of near-duplicates" in result.stderr


# -- a stale cache, real images ----------------------------------------------------------------


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf", "ivfpq"])
def test_rows_written_after_the_cache_are_seen(tmp_path: Path, index_type: str) -> None:
    """vectors.faiss behind the catalogue (a writer killed before it synced): new rows are
    found, removed ones never reported, exactly as brute force over the catalogue says."""
    from retrieval.store.catalog_schema import NewRow

    paths, xb = planted()
    index = make(tmp_path, paths, xb, StorageOptions(index_type=index_type))
    rng = np.random.default_rng(9)
    new = [toward(xb[100], 0.98, rng), toward(xb[1250], 0.99, rng)]  # a new pair, a 3rd member
    with IndexDir.open_writer(index.directory) as index_dir:
        with index_dir.catalog.read() as conn:
            gone = index_dir.catalog.ids_for_paths(conn, [paths[0].encode(), paths[31].encode()])
        index_dir.catalog.remove(list(gone.values()))  # one of a pair; a triple's source
        index_dir.catalog.store_many(
            [
                NewRow(f"/new/{i}.jpg".encode(), 10, 0, None, 10, 10, "JPEG", v, None)
                for i, v in enumerate(new)
            ]
        )
        generation = index_dir.catalog.generation()
    with IndexDir.open(index.directory) as index_dir:
        assert index_dir.base().generation < generation  # the cache is stale
    truth = brute_force(*stored(index), THRESHOLD)
    report = index.dups(threshold=THRESHOLD)
    assert found(report) == truth
    assert frozenset([b"/new/0.jpg", paths[100].encode()]) in truth
    assert not any(paths[0].encode() in g for g in truth)


def test_copies_of_a_real_image_are_grouped(tmp_path: Path) -> None:
    """End to end with the tiny model: a byte copy and a lossless PNG of a JPEG's pixels embed
    identically; a different drawing does not join them."""
    from conftest import TINY

    photos = tmp_path / "photos"
    photos.mkdir()
    save_image(draw_image(11, (160, 120)), photos / "a.jpg", quality=90)
    (photos / "copy of a.jpg").write_bytes((photos / "a.jpg").read_bytes())
    from PIL import Image

    with Image.open(photos / "a.jpg") as decoded:
        save_image(decoded.convert("RGB"), photos / "a.png")
    save_image(draw_image(12, (160, 120)), photos / "other.jpg")
    result = run_cli("index", photos, "--index", tmp_path / "index", *TINY)
    assert result.exit_code == 0, result.stderr
    result = run_cli("dups", "--index", tmp_path / "index", "--threshold", "0.999", "--json")
    assert result.exit_code == 0, result.stderr
    (group,) = result.json()["groups"]
    names = [Path(m["path"]).name for m in group["members"]]
    # same pixels: the largest file is kept (the PNG), then the older of the JPEG copies
    assert names[0] == "a.png"
    assert sorted(names) == ["a.jpg", "a.png", "copy of a.jpg"]
    assert group["min_similarity"] >= 0.999


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_range_search_returns_every_neighbour_above_the_threshold(index_type: str) -> None:
    """Including a query with more neighbours above the threshold than the first k-NN round
    asks for (HNSW goes through k-NN, k doubled until the k-th neighbour falls below)."""
    from retrieval.store import vectors

    rng = np.random.default_rng(4)
    a = unit(rng.standard_normal(DIM))
    copies = [toward(a, 0.99, rng) for _ in range(150)]
    xb = np.concatenate([unit(rng.standard_normal((2000, DIM))), copies])
    ids = np.arange(len(xb), dtype=np.int64) * 3 + 1
    index = vectors.build(xb, ids, index_type, {"nprobe": 64} if index_type == "ivf" else None)
    xq = xb[[0, 2000, 2100]]
    lims, D, I = vectors.range_search(index, xq, 0.95, exclude=ids[[2001]])
    assert lims.dtype == np.int64 and lims[0] == 0
    for q in range(len(xq)):
        S = xb @ xq[q]
        truth = set(ids[(S >= 0.95)].tolist()) - {int(ids[2001])}
        got = I[lims[q] : lims[q + 1]]
        assert set(got.tolist()) == truth
        exact = {int(i): float(s) for i, s in zip(ids, S, strict=True)}
        for i, score in zip(got.tolist(), D[lims[q] : lims[q + 1]].tolist(), strict=True):
            assert score == pytest.approx(exact[i], abs=1e-5)
    assert lims[2] - lims[1] == 149  # 150 copies, one excluded


def test_output_inside_an_index_folder_is_refused(tmp_path: Path) -> None:
    index = five_copies(tmp_path, **META)
    catalog = Path(index.directory) / "catalog.sqlite"
    before = catalog.read_bytes()
    result = run_cli("dups", "--index", index.directory, "-o", catalog)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: {catalog} is inside the index folder {index.directory}; writing there could "
        "destroy the index: choose an output outside it\n"
    )
    assert catalog.read_bytes() == before
