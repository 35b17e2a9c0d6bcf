"""store/manifest.py: the manifest's round trip through dict and JSON, its schema check, the
properties derived from it, and the model checks that guard an index."""

from __future__ import annotations

import json

import pytest

from retrieval.errors import IndexIncompatible
from retrieval.specs import ModelInfo, Preprocess, WeightsSpec
from retrieval.store.manifest import SCHEMA_VERSION, Manifest, check_model

PREPROCESS = Preprocess(8, 8, 8, "bilinear", (0.5,) * 3, (0.5,) * 3)


def model(name: str = "fake", weights: WeightsSpec | None = None, dim: int = 24) -> ModelInfo:
    return ModelInfo(name, weights or WeightsSpec("untrained", identity="0"), PREPROCESS, dim)


def learned() -> Manifest:
    """A manifest with every optional field set (a learned reduction, a rerank factor)."""
    return Manifest(
        model=model(),
        precision="fp32",
        vector_dtype="float16",
        index_type="ivf",
        index_params={"nlist": 64, "nprobe": 16},
        index_policy={"requested": "auto", "memory_bytes": 1 << 30},
        reduction={"dim": 8, "whiten": False, "from_dim": 24, "sha256": "ab" * 32},
        rerank=12,
        created_with={"retrieval": "test"},
    )


@pytest.mark.parametrize("manifest", [Manifest(model=model(), precision="fp32"), learned()])
def test_round_trip_through_dict_and_json(manifest: Manifest) -> None:
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest


def test_unset_optional_fields_are_not_written() -> None:
    """Manifests of indexes made before reduction and rerank existed read back unchanged."""
    data = Manifest(model=model(), precision="fp32").to_dict()
    assert "reduction" not in data and "rerank" not in data
    assert learned().to_dict()["rerank"] == 12


def test_json_is_stable_text() -> None:
    """Sorted keys and a final newline: the mirror's bytes depend on the manifest only."""
    text = learned().to_json()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_another_schema_version_is_refused() -> None:
    data = {**Manifest(model=model(), precision="fp32").to_dict(), "schema_version": 99}
    with pytest.raises(IndexIncompatible) as caught:
        Manifest.from_dict(data)
    assert str(caught.value) == (
        f"this index has schema version 99, but this retrieval reads version {SCHEMA_VERSION}; "
        "rebuild it with `retrieval index --index DIR FOLDER`"
    )


def test_cache_dim_follows_a_learned_reduction_only() -> None:
    plain = Manifest(model=model(dim=24), precision="fp32")
    asked = plain.with_index("flat", {})
    asked = Manifest.from_dict({**asked.to_dict(), "reduction": {"dim": 8, "whiten": False}})
    assert (plain.reduced, plain.cache_dim) == (False, 24)
    assert (asked.reduced, asked.cache_dim) == (False, 24)  # asked for, not learned yet
    assert (learned().reduced, learned().cache_dim) == (True, 8)


def test_with_index_copies_the_params() -> None:
    params = {"nlist": 4}
    changed = Manifest(model=model(), precision="fp32").with_index("ivf", params)
    params["nlist"] = 99
    assert (changed.index_type, changed.index_params) == ("ivf", {"nlist": 4})


def test_check_model_accepts_the_same_model_and_weights() -> None:
    manifest = Manifest(model=model(), precision="fp32")
    check_model(manifest, "fake", WeightsSpec("untrained", identity="0"), "/idx")
    check_model(manifest, None, None, "/idx")


def test_check_model_refuses_another_model() -> None:
    manifest = Manifest(model=model(), precision="fp32")
    with pytest.raises(IndexIncompatible) as caught:
        check_model(manifest, "resnet50", None, "/idx")
    assert str(caught.value) == (
        "the index at /idx was built with fake (untrained (seed 0)), not resnet50; leave out "
        "--model to use fake, or build a new index for it: `retrieval index --index NEW_DIR "
        "FOLDER` (or delete /idx)"
    )


def test_check_model_refuses_other_weights() -> None:
    manifest = Manifest(model=model(), precision="fp32")
    with pytest.raises(IndexIncompatible) as caught:
        check_model(manifest, "fake", WeightsSpec("untrained", identity="7"), "/idx")
    assert str(caught.value) == (
        "the index at /idx was built with fake untrained (seed 0), not untrained (seed 7); "
        "leave out the weights options to reuse them, or build a new index for it: "
        "`retrieval index --index NEW_DIR FOLDER` (or delete /idx)"
    )
