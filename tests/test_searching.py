"""`retrieval.ops.searching` at the library level, on seeded vectors with exact ground truth.

An index of 60 synthetic unit vectors (flat, so search is exact) under three folders with
known formats, sizes, dimensions and mtimes: every filter is checked against the ids numpy
picks, k is capped at what can be found, `like` queries leave themselves out, and a query
that cannot be used gets its own error while the others are answered.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import draw_image, save_image
from test_ann import clustered, exact, row, synthetic_manifest

from retrieval.errors import QueryImageError, UsageError
from retrieval.ops.searching import (
    Query,
    QueryResult,
    QueryStream,
    SearchFilter,
    allowed_ids,
    check_limits,
    embed_each,
    embed_queries,
    like_each,
    search_queries,
    search_vectors,
)
from retrieval.store.index_dir import IndexDir

N = 60
FOLDERS = ["/photos/a", "/photos/ab", "/photos/b/deep"]  # /photos/ab shares a's prefix
FORMATS = ["JPEG", "PNG", "WEBP"]


def _path(i: int) -> str:
    return f"{FOLDERS[i % 3]}/img{i:03d}.jpg"


def _meta(i: int) -> dict:
    """Row i's metadata: format by i % 3, size 1000 + 10 i bytes, width 10 i, height 600 - 10 i,
    mtime i seconds after the epoch."""
    return {
        "format": FORMATS[i % 3],
        "size": 1000 + 10 * i,
        "width": 10 * i,
        "height": 600 - 10 * i,
        "mtime_ns": i * 10**9,
    }


@pytest.fixture(scope="module")
def album(tmp_path_factory: pytest.TempPathFactory) -> dict:
    directory = tmp_path_factory.mktemp("searching") / "index"
    xb = clustered(N, clusters=6, seed=3)
    with IndexDir.open_writer(directory) as index_dir:
        index_dir.set_manifest(synthetic_manifest())
        index_dir.catalog.store_many([row(_path(i), xb[i], **_meta(i)) for i in range(N)])
        index_dir.sync_vectors()
        with index_dir.catalog.read() as conn:
            found = index_dir.catalog.ids_for_paths(conn, [_path(i).encode() for i in range(N)])
    ids = np.array([found[_path(i).encode()] for i in range(N)], np.int64)
    xq = clustered(5, clusters=6, seed=11)
    return {"directory": directory, "xb": xb, "ids": ids, "xq": xq}


def _search(album: dict, k: int = 5, **options) -> list[QueryResult]:
    names = [f"q{i}" for i in range(len(album["xq"]))]
    with IndexDir.open(album["directory"]) as index_dir:
        return search_vectors(index_dir, album["xq"], names, k, **options)


def _ids(results: list[QueryResult]) -> list[list[int]]:
    return [[n.id for n in r.results] for r in results]


def test_flat_search_equals_numpy(album: dict) -> None:
    """Ids in numpy's order; scores are the cosines, paths the stored ones."""
    results = _search(album, k=7)
    truth = exact(album["xb"], album["ids"], album["xq"], 7)
    assert _ids(results) == truth.tolist()
    by_id = {int(i): n for n, i in enumerate(album["ids"])}
    for q, result in enumerate(results):
        assert result.query == f"q{q}" and result.error is None
        for hit in result.results:
            n = by_id[hit.id]
            assert hit.path == _path(n).encode()
            assert hit.score == pytest.approx(float(album["xq"][q] @ album["xb"][n]), abs=1e-5)


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        (SearchFilter(under=("/photos/a",)), lambda i: i % 3 == 0),  # not /photos/ab
        (SearchFilter(under=("/photos/a/",)), lambda i: i % 3 == 0),
        (SearchFilter(under=("/photos/ab", "/photos/b")), lambda i: i % 3 != 0),
        (SearchFilter(formats=("png", ".webp")), lambda i: i % 3 != 0),
        (SearchFilter(formats=("jpg",)), lambda i: i % 3 == 0),
        (SearchFilter(min_width=300), lambda i: i >= 30),
        (SearchFilter(min_height=300), lambda i: i <= 30),
        (SearchFilter(min_size=1200, max_size=1300), lambda i: 20 <= i <= 30),
        (SearchFilter(modified_after=10, modified_before=20), lambda i: 10 <= i < 20),
        (SearchFilter(under=("/photos/b",), min_width=300), lambda i: i % 3 == 2 and i >= 30),
    ],
)
def test_filters_keep_exactly_the_matching_images(album: dict, filters, keep) -> None:
    """k results from the allowed set, in the exact order over those vectors."""
    allowed = np.array([keep(i) for i in range(N)])
    with IndexDir.open(album["directory"]) as index_dir:
        assert allowed_ids(index_dir, filters).tolist() == sorted(album["ids"][allowed].tolist())
        assert index_dir.notices == []
    k = min(5, int(allowed.sum()))
    truth = exact(album["xb"][allowed], album["ids"][allowed], album["xq"], k)
    assert _ids(_search(album, k=5, filters=filters)) == truth.tolist()


def test_no_filter_is_no_id_set(album: dict) -> None:
    with IndexDir.open(album["directory"]) as index_dir:
        assert allowed_ids(index_dir, None) is None
        assert allowed_ids(index_dir, SearchFilter()) is None


def test_filter_typos_leave_a_notice_and_no_results(album: dict) -> None:
    with IndexDir.open(album["directory"]) as index_dir:
        allow = allowed_ids(index_dir, SearchFilter(under=("/photos/c",), formats=("jpgg",)))
        assert len(allow) == 0
        assert index_dir.notices[0] == (
            "no indexed image is under /photos/c; check the folder "
            "(see `retrieval info` for what the index holds)"
        )
        assert index_dir.notices[1].startswith("--image-format jpgg is not an image format (known:")
    assert _ids(_search(album, filters=SearchFilter(under=("/photos/c",)))) == [[]] * 5


@pytest.mark.parametrize("k", [N, N + 1, 5000, 2**31])
def test_k_is_capped_at_what_can_be_found(album: dict, k: int) -> None:
    results = _search(album, k=k)
    assert _ids(results) == exact(album["xb"], album["ids"], album["xq"], N).tolist()


def test_k_is_capped_at_the_filtered_count(album: dict) -> None:
    results = _search(album, k=2**31, filters=SearchFilter(min_width=500))
    assert [len(r.results) for r in results] == [10] * 5  # i = 50..59


def test_min_score_drops_weaker_hits(album: dict) -> None:
    full = _search(album, k=N)
    cut = full[0].results[9].score  # a hit scoring exactly min_score is kept
    kept = _search(album, k=N, min_score=cut)
    for all_hits, hits in zip(full, kept, strict=True):
        assert hits.results == [n for n in all_hits.results if n.score >= cut]
    assert len(kept[0].results) >= 10 and kept[0].results[9] == full[0].results[9]


@pytest.mark.parametrize(
    ("k", "min_score", "message"),
    [
        (0, None, "-k must be at least 1, not 0"),
        (-3, None, "-k must be at least 1, not -3"),
        (5, 1.5, "min_score must be a cosine between -1 and 1, not 1.5; "),
        (5, float("nan"), "min_score must be a cosine between -1 and 1, not nan; "),
    ],
)
def test_bad_limits_are_usage_errors(album: dict, k: int, min_score, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_limits(k, min_score)
    assert str(caught.value).startswith(message)
    with pytest.raises(UsageError):
        _search(album, k=k, min_score=min_score)
    with IndexDir.open(album["directory"]) as index_dir, pytest.raises(UsageError):
        search_queries(index_dir, [Query("bad", None, error="x")], k, min_score)


def test_like_queries_leave_themselves_out(album: dict) -> None:
    picks = [0, 31]
    with IndexDir.open(album["directory"]) as index_dir:
        queries = like_each(index_dir, [_path(i) for i in picks])
        assert [q.own_id for q in queries] == album["ids"][picks].tolist()
        np.testing.assert_array_equal(np.stack([q.vector for q in queries]), album["xb"][picks])
        results = search_queries(index_dir, queries, k=4)
    truth = exact(album["xb"], album["ids"], album["xb"][picks], 5)
    owns = album["ids"][picks]
    assert _ids(results) == [t[t != own][:4].tolist() for t, own in zip(truth, owns, strict=True)]
    assert [r.query for r in results] == [_path(i) for i in picks]


def test_like_an_image_not_in_the_index_is_a_per_query_error(album: dict) -> None:
    with IndexDir.open(album["directory"]) as index_dir:
        queries = like_each(index_dir, ["/photos/a/nope.jpg", _path(3)])
        results = search_queries(index_dir, queries, k=3)
    assert results[0] == QueryResult(
        "/photos/a/nope.jpg",
        [],
        f"/photos/a/nope.jpg is not in the index at {album['directory']}; search with the "
        "image file itself (`retrieval search /photos/a/nope.jpg`) or index it first",
    )
    assert len(results[1].results) == 3 and album["ids"][3] not in _ids(results)[1]


def test_a_bad_query_does_not_spoil_the_others(album: dict) -> None:
    queries = [
        Query("first", album["xq"][0]),
        Query("broken", None, error="cannot use query image broken: no such file"),
        Query("last", album["xq"][1]),
    ]
    with IndexDir.open(album["directory"]) as index_dir:
        results = search_queries(index_dir, queries, k=3)
    truth = exact(album["xb"], album["ids"], album["xq"][:2], 3).tolist()
    assert [r.query for r in results] == ["first", "broken", "last"]
    assert [r.error for r in results] == [None, queries[1].error, None]
    assert _ids(results) == [truth[0], [], truth[1]]
    assert results[1].to_dict() == {
        "query": "broken",
        "results": [],
        "error": "cannot use query image broken: no such file",
    }


def test_embed_each_gives_each_bad_image_its_own_error(tmp_path: Path, tiny_embedder) -> None:
    good = Path(os.fsdecode(save_image(draw_image(1), tmp_path / "good.png")))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a JPEG\n" * 20)
    images = [good, tmp_path / "missing.jpg", "https://example.com/x.jpg", broken, "red car"]
    with open(good, "rb") as stream:
        queries = embed_each(tiny_embedder, [*images, QueryStream(stream, "piped")], 100.0)
    assert [q.name for q in queries] == [os.fsdecode(i) for i in images] + ["piped"]
    assert [q.vector is None for q in queries] == [False, True, True, True, True, False]
    assert queries[0].vector.shape == (96,)
    np.testing.assert_array_equal(queries[0].vector, queries[5].vector)
    assert queries[1].error == f"cannot use query image {tmp_path / 'missing.jpg'}: no such file"
    assert queries[2].error == (
        "cannot use query image https://example.com/x.jpg: search takes example images, not "
        "URLs; download the URL first, e.g. curl -sL https://example.com/x.jpg | retrieval search -"
    )
    assert queries[3].error == (
        f"cannot use query image {broken}: not a supported image (unknown or corrupt header)"
    )
    assert queries[4].error == (
        f"cannot use query image {os.path.abspath('red car')}: no such file; search takes "
        "example images, not text: give the path of an image that looks like what you want"
    )
    with pytest.raises(QueryImageError) as caught:
        embed_queries(tiny_embedder, [good, broken], 100.0)
    assert str(caught.value) == queries[3].error
