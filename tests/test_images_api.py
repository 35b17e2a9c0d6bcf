"""`Index.image` (the record of one searchable image, by catalogue id) and `Index.failures`
(the files that could not be indexed), on the shared tiny index."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import pytest
from PIL import Image

import retrieval
from retrieval import Failure, ImageRecord, Index, NotFound, UsageError


def test_image_matches_the_search_hit_and_the_file(tiny_index):
    index = Index(tiny_index.directory)
    path = tiny_index.originals[3]
    (q,) = index.search([tiny_index.originals[3]], k=1)
    hit = q.results[0]
    record = index.image(hit.id)
    assert isinstance(record, ImageRecord)
    st = os.stat(path)
    with Image.open(path) as image:
        width, height, fmt = image.width, image.height, image.format
    digest = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    assert (record.id, record.raw_path, record.path) == (hit.id, hit.path, str(path))
    assert (record.size, record.mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert (record.width, record.height, record.format) == (width, height, fmt)
    assert record.content_hash == digest
    assert record.mtime.timestamp() == pytest.approx(st.st_mtime, abs=1e-3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.size = 0  # type: ignore[misc]


def test_image_to_dict_is_json(tiny_index):
    record = Index(tiny_index.directory).image(1)
    out = record.to_dict()
    assert list(out) == [
        "id", "path", "size", "mtime", "mtime_ns", "width", "height", "format", "content_hash"
    ]  # fmt: skip
    assert out["mtime"].endswith("+00:00")
    json.dumps(out)


def test_a_failed_file_has_no_record_but_is_a_failure(tiny_index):
    index = Index(tiny_index.directory)
    failures = index.failures()
    assert [f.path for f in failures] == [str(tiny_index.broken)]
    (failure,) = failures
    assert isinstance(failure, Failure)
    assert failure.raw_path == os.fsencode(tiny_index.broken)
    assert failure.reason == "not a supported image (unknown or corrupt header)"
    assert failure.to_dict() == {"id": failure.id, "path": failure.path, "reason": failure.reason}
    with pytest.raises(NotFound):
        index.image(failure.id)  # only searchable rows
    with pytest.raises(NotFound):
        index.thumbnail(failure.id)
    assert index.failures(limit=0) == []
    with pytest.raises(UsageError):
        index.failures(limit=-1)


def test_failures_are_the_ones_info_counts(tiny_index):
    index = Index(tiny_index.directory)
    assert len(index.failures()) == index.info()["failed"]


@pytest.mark.parametrize("bad", [0, 10_000, -5, 2**63, 2**80])
def test_unknown_ids_raise_not_found_with_one_line(tiny_index, bad):
    with pytest.raises(NotFound) as caught:
        Index(tiny_index.directory).image(bad)
    assert "\n" not in str(caught.value)
    assert caught.value.image_id == bad
    assert isinstance(caught.value, retrieval.RetrievalError)


def test_the_names_are_public():
    for name in ("ImageRecord", "Failure", "NotFound"):
        assert name in retrieval.__all__
    assert retrieval.errors.NotFound is NotFound
