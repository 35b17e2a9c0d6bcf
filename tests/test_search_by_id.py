"""The library side of `retrieval serve`: search by catalogue id (no model), a model loaded
once and passed to many searches, and query images embedded from bytes in one call."""

from __future__ import annotations

import io

import numpy as np
import pytest

from retrieval import Index, QueryStream, SearchFilter, UsageError


def test_like_ids_finds_what_like_by_path_finds(tiny_index) -> None:
    index = Index(tiny_index.directory)
    path = tiny_index.originals[3]
    by_path = index.search(like=[path], k=4)[0]
    own = index.search(like=[path], k=20)[0]
    image_id = next(
        r.id
        for r in index.search(like=[tiny_index.originals[0]], k=20)[0].results
        if r.path == str(path).encode()
    )
    by_id = index.search(like_ids=[image_id], k=4)[0]
    assert [h.id for h in by_id.results] == [h.id for h in by_path.results]
    assert by_id.query == str(path)
    assert image_id not in [h.id for h in own.results]  # left out of its own results


def test_like_ids_with_a_filter_and_an_unknown_id(tiny_index) -> None:
    index = Index(tiny_index.directory)
    first = index.search(like=[tiny_index.originals[0]], k=1)[0].results[0].id
    under = str(tiny_index.photos / "sub")
    results = index.search(like_ids=[first, 999999], k=10, filters=SearchFilter(under=(under,)))
    assert results[0].results and all(h.path.startswith(under.encode()) for h in results[0].results)
    assert results[1].results == []
    assert "no indexed image has id 999999" in results[1].error


def test_search_with_no_query_at_all_is_refused(tiny_index) -> None:
    with pytest.raises(UsageError):
        Index(tiny_index.directory).search(k=3)


def test_one_loaded_embedder_serves_search_and_embed(tiny_index) -> None:
    index = Index(tiny_index.directory)
    embedder = index.load_embedder("cpu")
    query = tiny_index.queries["crop"]
    plain = index.search([query], k=3, device="cpu")[0]
    shared = index.search([query], k=3, embedder=embedder)[0]
    assert [h.id for h in shared.results] == [h.id for h in plain.results]
    data = query.read_bytes()
    embedded = index.embed(
        [QueryStream(io.BytesIO(data), "upload"), QueryStream(io.BytesIO(b"junk"), "bad")],
        embedder=embedder,
    )
    assert embedded[0].error is None and embedded[0].vector.shape == (96,)
    assert embedded[1].vector is None and "bad" in embedded[1].error
    again = index.search_vectors(embedded[0].vector[None], k=3)[0]
    assert [h.id for h in again.results] == [h.id for h in plain.results]
    np.testing.assert_allclose(np.linalg.norm(embedded[0].vector), 1.0, rtol=1e-4)


def test_a_shared_index_answers_from_threads_and_sees_a_writer(tmp_path) -> None:
    import threading

    from conftest import TINY, make_photos, run_cli

    make_photos(tmp_path / "a", range(4))
    make_photos(tmp_path / "b", range(4, 7))
    assert run_cli("index", tmp_path / "a", "--index", tmp_path / "i", *TINY).exit_code == 0
    shared = Index(tmp_path / "i", shared=True)
    plain = Index(tmp_path / "i")
    first = plain.search(like=[tmp_path / "a" / "photo_0.jpg"], k=3)[0]
    found: list[list[int]] = []

    def search() -> None:
        for _ in range(5):
            result = shared.search(like_ids=[first.results[0].id], k=3)[0]
            found.append([h.id for h in result.results])

    threads = [threading.Thread(target=search) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    expected = [h.id for h in plain.search(like_ids=[first.results[0].id], k=3)[0].results]
    assert found == [expected] * 20
    assert shared.info()["images"] == 4
    assert run_cli("index", tmp_path / "b", "--index", tmp_path / "i", *TINY).exit_code == 0
    assert shared.info()["images"] == 7
    assert len(shared.search(like_ids=[first.results[0].id], k=10)[0].results) == 6
    shared.close()
