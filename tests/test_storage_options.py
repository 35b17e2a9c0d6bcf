"""`StorageOptions` through the library: `Index.add(storage=...)` records it in a new index,
None keeps what an index has, and what only a new index can change is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_photos

from retrieval import (
    Index,
    IndexIncompatible,
    IndexOptions,
    StorageOptions,
    UsageError,
    WeightsSpec,
)

UNTRAINED = {"model": "test_resnet", "weights": WeightsSpec("untrained")}


def _index(tmp_path: Path, storage: StorageOptions | None) -> Index:
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    make_photos(photos, range(3))
    index = Index(tmp_path / "index")
    index.add([photos], storage=storage, options=IndexOptions(workers=0), **UNTRAINED)
    return index


def test_a_new_index_records_the_storage_options(tmp_path: Path) -> None:
    asked = StorageOptions(index_type="flat", memory=1 << 30, vector_dtype="float16", rerank=2)
    manifest = _index(tmp_path, asked).manifest()
    assert (manifest.index_type, manifest.vector_dtype, manifest.rerank) == ("flat", "float16", 2)
    assert manifest.index_policy == {"requested": "flat", "memory_bytes": 1 << 30}


def test_none_keeps_what_the_index_has_and_a_new_only_option_is_refused(tmp_path: Path) -> None:
    index = _index(tmp_path, StorageOptions(vector_dtype="float16"))
    before = index.manifest()
    index.add([tmp_path / "photos"], options=IndexOptions(workers=0))
    assert index.manifest() == before
    with pytest.raises(IndexIncompatible) as caught:
        index.add([tmp_path / "photos"], storage=StorageOptions(vector_dtype="float32"))
    assert str(caught.value).startswith(
        f"the index at {index.directory} stores float16 vectors, not float32; copy it into a "
        "new index instead"
    )


def test_a_bad_choice_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        _index(tmp_path, StorageOptions(index_type="btree"))
    assert str(caught.value) == (
        "unknown index type 'btree'; use one of auto, flat, hnsw, ivf, ivfpq"
    )


def test_storage_options_are_frozen() -> None:
    options = StorageOptions(dim=8)
    with pytest.raises(AttributeError):
        options.dim = 16  # type: ignore[misc]


@pytest.mark.parametrize(
    "storage",
    [
        StorageOptions(index_type="btree"),
        StorageOptions(vector_dtype="int8"),
        StorageOptions(dim=4096),
    ],
    ids=["index-type", "vector-dtype", "dim"],
)
def test_a_bad_storage_option_leaves_no_index_behind(tmp_path: Path, storage) -> None:
    with pytest.raises(UsageError):
        _index(tmp_path, storage)
    assert not (tmp_path / "index").exists()
