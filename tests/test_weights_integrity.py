"""The weights loaded are the weights checked: a file is read once (the bytes hashed are the
bytes loaded), and pretrained weights in the Hugging Face cache are pinned by SHA-256 too."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from conftest import make_photos, run_cli
from safetensors.torch import save_file
from test_backbone import HUB_ID, assert_backbone_equals, fake_hub_cache, sha256, trained_state

from retrieval import Index
from retrieval.embedding.backbone import create_backbone, from_file, pretrained
from retrieval.errors import WeightsMismatch
from retrieval.specs import WeightsSpec

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def states() -> tuple[dict, dict]:
    return trained_state(7), trained_state(8)


def save(state: dict, path: Path) -> None:
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)


class SwapAfterHashing:
    """hashlib.sha256 that, as its digest is taken, replaces `path` with other weights: the
    race of a file swapped between the checksum and the load."""

    def __init__(self, path: Path, other: dict, real=hashlib.sha256) -> None:
        self.path, self.other, self.real, self.swaps = path, other, real, 0

    def __call__(self, data: bytes = b"") -> SwapAfterHashing._Hash:
        return self._Hash(self, self.real(data))

    class _Hash:
        def __init__(self, owner: SwapAfterHashing, inner) -> None:
            self.owner, self.inner = owner, inner

        def update(self, data: bytes) -> None:
            self.inner.update(data)

        def hexdigest(self) -> str:
            digest = self.inner.hexdigest()
            owner = self.owner
            if owner.swaps == 0:
                swapped = owner.path.with_name("swap" + owner.path.suffix)
                save(owner.other, swapped)
                os.replace(swapped, owner.path)
                owner.swaps += 1
            return digest


@pytest.mark.parametrize("name", ["w.safetensors", "w.pth"])
def test_a_file_swapped_after_hashing_is_not_loaded(tmp_path: Path, monkeypatch, states, name):
    original, other = states
    path = tmp_path / name
    save(original, path)
    expected = sha256(path)
    swapper = SwapAfterHashing(path, other)
    monkeypatch.setattr(hashlib, "sha256", swapper)
    model, _, spec = create_backbone("test_resnet", from_file(path))
    assert swapper.swaps == 1 and sha256(path) != expected  # the swap did happen
    assert spec.identity == expected
    assert_backbone_equals(model, original)  # the bytes hashed are the bytes loaded


def test_cached_pretrained_weights_swapped_after_hashing_are_not_loaded(
    tmp_path: Path, monkeypatch, states
) -> None:
    original, other = states
    cached = fake_hub_cache(tmp_path / "hf", original, REVISION)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    expected = sha256(cached)
    swapper = SwapAfterHashing(cached, other)
    monkeypatch.setattr(hashlib, "sha256", swapper)
    model, _, spec = create_backbone("test_resnet", pretrained())
    assert swapper.swaps == 1
    assert spec.sha256 == expected
    assert_backbone_equals(model, original)


def test_pretrained_weights_record_their_sha256(tmp_path: Path, monkeypatch, states) -> None:
    cached = fake_hub_cache(tmp_path / "hf", states[0], REVISION)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    make_photos(tmp_path / "photos", [1, 2])
    directory = tmp_path / "index"
    args = ("--model", "test_resnet", "--workers", "0", "--quiet")
    built = run_cli("index", tmp_path / "photos", "--index", directory, *args)
    assert built.exit_code == 0, built.stderr
    assert Index(directory).manifest().model.weights == WeightsSpec(
        "pretrained", identity=f"{HUB_ID}@{REVISION}", sha256=sha256(cached)
    )


def test_pretrained_weights_replaced_in_the_cache_are_refused(
    tmp_path: Path, monkeypatch, states
) -> None:
    original, other = states
    cached = fake_hub_cache(tmp_path / "hf", original, REVISION)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    make_photos(tmp_path / "photos", [1, 2])
    directory = tmp_path / "index"
    args = ("--model", "test_resnet", "--workers", "0", "--quiet")
    assert run_cli("index", tmp_path / "photos", "--index", directory, *args).exit_code == 0
    expected = sha256(cached)
    save_file(other, str(cached))  # valid weights, same hub id and revision
    query = tmp_path / "photos" / "photo_1.jpg"
    refused = run_cli("search", query, "--index", directory)
    assert (refused.exit_code, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"error: pretrained weights {cached} ({HUB_ID}@{REVISION}) changed since the index "
        f"was built (sha256 {sha256(cached)[:12]}, expected {expected[:12]}); the Hugging "
        "Face cache holds other weights under the same name: restore the original file "
        "(delete it and download it again), or rebuild the index\n"
    )
    make_photos(tmp_path / "photos", [3])  # a new image: adding it needs the model
    with pytest.raises(WeightsMismatch):
        Index(directory).add([tmp_path / "photos"])


def test_manifests_without_a_pretrained_sha256_still_load(
    tmp_path: Path, monkeypatch, states
) -> None:
    fake_hub_cache(tmp_path / "hf", states[0], REVISION)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    old = WeightsSpec.from_dict({"source": "pretrained", "path": None, "identity": "x@y"})
    assert old.sha256 is None
    model, _, spec = create_backbone("test_resnet", old)  # nothing to verify against
    assert_backbone_equals(model, states[0])
    assert spec.sha256 is not None


def test_manifest_form_of_weights() -> None:
    pinned = WeightsSpec("pretrained", identity="a@b", sha256="c" * 64)
    assert pinned.to_dict() == {
        "source": "pretrained",
        "path": None,
        "identity": "a@b",
        "sha256": "c" * 64,
    }
    assert WeightsSpec.from_dict(pinned.to_dict()) == pinned
    # file and untrained weights are written as before (their identity is the pin)
    assert WeightsSpec("file", "/w.pth", "d" * 64).to_dict() == {
        "source": "file",
        "path": "/w.pth",
        "identity": "d" * 64,
    }
    assert "sha256" not in WeightsSpec("untrained").to_dict()
