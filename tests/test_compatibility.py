"""What an index accepts: the manifest's schema version, and the model and weights it was
built with (`retrieval.store.manifest`).

The index is made from seeded vectors with a manifest naming test_resnet and its weights; the
folder added holds no image, so nothing is embedded and no model is loaded: only the check
runs. Vectors from other weights live in another space, so mixing them must be refused.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from test_ann import clustered, make_index, synthetic_manifest

from retrieval.api import Index
from retrieval.errors import IndexIncompatible
from retrieval.specs import WeightsSpec
from retrieval.store.manifest import SCHEMA_VERSION, Manifest

SEED_0 = WeightsSpec("untrained", identity="0")
FILE_A = WeightsSpec("file", path="/models/a.pth", identity="a" * 64)


def _index(tmp_path: Path, weights: WeightsSpec) -> Path:
    manifest = synthetic_manifest()
    manifest = replace(manifest, model=replace(manifest.model, name="test_resnet", weights=weights))
    make_index(tmp_path / "index", manifest, clustered(10))
    (tmp_path / "empty").mkdir()
    return tmp_path / "index"


@pytest.mark.parametrize(
    ("built", "asked"),
    [
        (SEED_0, WeightsSpec("untrained", identity="1")),
        (FILE_A, WeightsSpec("file", path="/models/b.pth", identity="b" * 64)),
        (FILE_A, WeightsSpec("untrained", identity="0")),
        (SEED_0, WeightsSpec("pretrained")),
    ],
    ids=["other-seed", "other-file", "file-vs-untrained", "untrained-vs-pretrained"],
)
def test_other_weights_of_the_same_model_are_refused(
    tmp_path: Path, built: WeightsSpec, asked: WeightsSpec
) -> None:
    directory = _index(tmp_path, built)
    with pytest.raises(IndexIncompatible) as caught:
        Index(directory).add([str(tmp_path / "empty")], model="test_resnet", weights=asked)
    assert str(caught.value) == (
        f"the index at {directory} was built with test_resnet {built.describe()}, not "
        f"{asked.describe()}; leave out the weights options to reuse them, or build a new "
        f"index for it: `retrieval index --index NEW_DIR FOLDER` (or delete {directory})"
    )


@pytest.mark.parametrize("weights", [SEED_0, FILE_A, None], ids=["seed", "file", "unasked"])
def test_the_same_weights_are_accepted(tmp_path: Path, weights: WeightsSpec | None) -> None:
    directory = _index(tmp_path, FILE_A if weights is FILE_A else SEED_0)
    report = Index(directory).add([str(tmp_path / "empty")], model="test_resnet", weights=weights)
    assert (report.added, report.removed) == (0, 0)


@pytest.mark.parametrize("version", [None, SCHEMA_VERSION - 1, SCHEMA_VERSION + 1])
def test_a_manifest_of_another_schema_version_is_refused(version: int | None) -> None:
    data = synthetic_manifest().to_dict()
    assert Manifest.from_dict(data) == synthetic_manifest()
    if version is None:
        del data["schema_version"]  # written before versions were recorded: version 0
    else:
        data["schema_version"] = version
    with pytest.raises(IndexIncompatible) as caught:
        Manifest.from_dict(data)
    assert str(caught.value) == (
        f"this index has schema version {version or 0}, but this retrieval reads version "
        f"{SCHEMA_VERSION}; rebuild it with `retrieval index --index DIR FOLDER`"
    )
