"""Filters (--under, --image-format, --min-width/height, --modified-after/before) and --like.

A filter is an id set applied inside the FAISS search, so it never leaves fewer than k
results when k images pass it, whatever the index type: checked against exact search over
the allowed vectors on synthetic data, and end to end on drawn images.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, draw_image, run_cli, save_image
from test_ann import PARAMS, clustered, exact, make_index, row, synthetic_manifest

from retrieval.api import Index
from retrieval.ops.searching import SearchFilter
from retrieval.store import vectors
from retrieval.store.index_dir import IndexDir

# -- the FAISS layer: k results whenever k are allowed -----------------------------------------


@pytest.fixture(scope="module")
def data():
    xb = clustered(1500, clusters=30)
    ids = np.arange(1500, dtype=np.int64) * 3 + 1
    xq = clustered(25, clusters=30, seed=9)
    return xb, ids, xq


@pytest.mark.parametrize("index_type", vectors.INDEX_TYPES)
@pytest.mark.parametrize("allowed", [7, 40, 600])
def test_filtered_search_returns_k_when_k_are_allowed(
    data, index_type: str, allowed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    xb, ids, xq = data
    # nprobe 1 / efSearch 16: a selective filter leaves the approximate pass short
    params = {**PARAMS[index_type], "nprobe": 1, "efSearch": 16}
    index = vectors.build(xb, ids, index_type, params)
    pick = np.random.default_rng(allowed).choice(len(ids), allowed, replace=False)
    allow = ids[pick]
    if allowed == 600:
        monkeypatch.setattr(vectors, "EXACT_ALLOW_MAX", 100)  # take the approximate path
    D, I = vectors.search(index, xq, 10, allow=allow)
    assert ((I >= 0).sum(axis=1) == min(10, allowed)).all()
    assert np.isin(I[I >= 0], allow).all()
    if index_type != "ivfpq" and (index_type == "flat" or allowed <= vectors.EXACT_ALLOW_MAX):
        truth = exact(xb[pick], allow, xq, min(10, allowed))  # a small set is searched exactly
        np.testing.assert_array_equal(I[:, : min(10, allowed)], truth)


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_excluded_ids_never_leave_a_search_short(data, index_type: str) -> None:
    xb, ids, xq = data
    index = vectors.build(xb, ids, index_type, {**PARAMS[index_type], "nprobe": 1})
    exclude = ids[: len(ids) - 12]  # all but 12 are gone
    D, I = vectors.search(index, xq, 10, exclude=exclude)
    assert ((I >= 0).sum(axis=1) == 10).all() and not np.isin(I, exclude).any()


def test_filter_covers_rows_not_yet_in_the_cache(tmp_path: Path) -> None:
    xb = clustered(300)
    make_index(tmp_path, synthetic_manifest(index_type="ivf", params={"nlist": 4}), xb)
    with IndexDir.open_writer(tmp_path) as index_dir:
        index_dir.catalog.store_many([row("/new/a.jpg", xb[0]), row("/new/b.jpg", xb[1])])
        # not synced: the reader answers from the cache plus the changed rows
        with index_dir.catalog.read() as conn:
            allow = index_dir.catalog.filter_ids(conn, under=[b"/new"])
        found = index_dir.search(xb[:1], 5, allow=allow)
    assert [h.path for h in found[0]] == [b"/new/a.jpg", b"/new/b.jpg"]


# -- the catalogue's conditions, and the CLI --------------------------------------------------


@pytest.fixture(scope="module")
def album(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """wide/: 4 images 160x96 (jpg, png alternating, modified 2020); tall/: 4 images 64x128
    (modified 2023); indexed with the tiny model."""
    root = tmp_path_factory.mktemp("album")
    paths: dict[str, Path] = {}
    for n in range(8):
        folder, size, year = ("wide", (160, 96), 2020) if n < 4 else ("tall", (64, 128), 2023)
        ext = "jpg" if n % 2 == 0 else "png"
        path = root / folder / f"p{n}.{ext}"
        save_image(draw_image(n, size), path)
        stamp = dt.datetime(year, 1 + n, 1).timestamp()
        os.utime(path, (stamp, stamp))
        paths[f"p{n}"] = path
    directory = root / "index"
    result = run_cli("index", root / "wide", root / "tall", "--index", directory, *TINY)
    assert result.exit_code == 0, result.stderr
    return {"root": root, "index": directory, "paths": paths}


def search(album: dict, *args: str) -> list[set[str]]:
    result = run_cli("search", "--index", album["index"], "--format", "json", *args)
    assert result.exit_code == 0, result.stderr
    return [{Path(h["path"]).name for h in q["results"]} for q in result.json()]


def test_under_keeps_k_results_inside_the_folder(album: dict) -> None:
    like = str(album["paths"]["p0"])
    assert search(album, "--like", like, "--under", str(album["root"] / "tall"), "-k", "3")[0] <= {
        "p4.jpg",
        "p5.png",
        "p6.jpg",
        "p7.png",
    }
    (got,) = search(album, "--like", like, "--under", str(album["root"] / "tall"), "-k", "4")
    assert got == {"p4.jpg", "p5.png", "p6.jpg", "p7.png"}
    (got,) = search(album, "--like", like, "-k", "10")
    assert got == {f"p{n}.{'jpg' if n % 2 == 0 else 'png'}" for n in range(1, 8)}  # not itself


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--image-format", "png"), {"p1.png", "p3.png", "p5.png", "p7.png"}),
        (("--image-format", "JPEG", "--under", "tall"), {"p4.jpg", "p6.jpg"}),
        (("--min-width", "100"), {"p1.png", "p2.jpg", "p3.png"}),
        (("--min-height", "100"), {"p4.jpg", "p5.png", "p6.jpg", "p7.png"}),
        (("--modified-after", "2023-06-01"), {"p5.png", "p6.jpg", "p7.png"}),
        (("--modified-before", "2020-03-01"), {"p1.png"}),
        (
            ("--modified-after", "2020-02-01", "--modified-before", "2023-06-01"),
            {
                "p1.png",
                "p2.jpg",
                "p3.png",
                "p4.jpg",
            },
        ),
        (("--under", "nowhere"), set()),
    ],
)
def test_metadata_filters(album: dict, args: tuple[str, ...], expected: set[str]) -> None:
    args = tuple(str(album["root"] / a) if a in ("tall", "nowhere") else a for a in args)
    (got,) = search(album, "--like", str(album["paths"]["p0"]), "-k", "8", *args)
    assert got == expected


def test_like_queries_are_batched_with_image_queries(album: dict) -> None:
    p0, p5 = album["paths"]["p0"], album["paths"]["p5"]
    result = run_cli(
        "search",
        str(p0),
        "--like",
        str(p5),
        "--index",
        album["index"],
        "-k",
        "1",
        "--format",
        "csv",
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "query,rank,score,id,path,error" and len(lines) == 3
    assert lines[1].startswith(f"{p0},1,1.000000,") and lines[1].endswith(f",{p0},")
    assert lines[2].startswith(f"{p5},1,") and not lines[2].endswith(f",{p5},")


def test_like_loads_no_model(album: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import retrieval.embedding.embedder as embedder

    def refuse(*args, **kwargs):
        raise AssertionError("a --like search must not load the model")

    monkeypatch.setattr(embedder, "load_embedder", refuse)
    found = Index(album["index"]).search(
        like=[album["paths"]["p1"], album["paths"]["p2"]],
        k=2,
        filters=SearchFilter(formats=("JPEG",)),
    )
    assert [len(q.results) for q in found] == [2, 2]
    assert all(h.path.endswith(b".jpg") for q in found for h in q.results)
    assert album["paths"]["p2"].name.encode() not in b" ".join(h.path for h in found[1].results)


def test_like_refuses_an_image_not_in_the_index(album: dict, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger.jpg"
    result = run_cli("search", "--like", str(stranger), "--index", album["index"])
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {stranger} is not in the index at {album['index']}; search with the image "
        f"file itself (`retrieval search {stranger}`) or index it first\n"
    )


def test_search_needs_images_or_like(album: dict) -> None:
    result = run_cli("search", "--index", album["index"])
    assert result.exit_code == 2
    assert "give query IMAGES, or --like PATH for an image already indexed" in result.stderr


def test_filter_ids_by_metadata(album: dict) -> None:
    with IndexDir.open(album["index"]) as index_dir, index_dir.catalog.read() as conn:
        everything = index_dir.catalog.filter_ids(conn)
        tall = index_dir.catalog.filter_ids(conn, under=[os.fsencode(album["root"] / "tall")])
        big = index_dir.catalog.filter_ids(conn, min_size=10**9)
    assert len(everything) == 8 and len(tall) == 4 and len(big) == 0
