"""Backbones and their weights: local files, the Hugging Face cache, untrained, bad names."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import TINY, draw_image, make_photos, run_cli, save_image
from safetensors.torch import save_file

from retrieval import Index
from retrieval.embedding.backbone import create_backbone, from_file, pretrained, untrained
from retrieval.errors import ModelError, WeightsMismatch, WeightsUnavailable
from retrieval.specs import WeightsSpec

HUB_ID = "timm/test_resnet.r160_in1k"


def trained_state(seed: int, model: str = "test_resnet") -> dict[str, torch.Tensor]:
    """A full state dict (classifier included, as checkpoints have) with seeded values."""
    torch.manual_seed(seed)
    net = timm.create_model(model, pretrained=False)  # 1000-class head: fc.weight, fc.bias
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_backbone_equals(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert "fc.weight" not in own
    assert set(own) == {k for k in state if not k.startswith("fc.")}
    for key, value in own.items():
        assert torch.equal(value, state[key]), key


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return trained_state(7)


# -- a local weights file ----------------------------------------------------------------------


def test_weights_from_safetensors(tmp_path: Path, state) -> None:
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    model, preprocess, spec = create_backbone("test_resnet", from_file(path))
    assert_backbone_equals(model, state)
    assert spec == WeightsSpec("file", path=str(path), identity=sha256(path))
    assert not model.training
    assert (preprocess.height, preprocess.width) == (160, 160)


@pytest.mark.parametrize("layout", ["plain", "nested state_dict", "nested model", "module."])
def test_weights_from_pth(tmp_path: Path, state, layout: str) -> None:
    if layout == "module.":
        saved = {"module." + k: v for k, v in state.items()}
    elif layout.startswith("nested"):
        saved = {layout.split()[1]: {"module." + k: v for k, v in state.items()}, "epoch": 3}
    else:
        saved = state
    path = tmp_path / "w.pth"
    torch.save(saved, path)
    model, _, spec = create_backbone("test_resnet", from_file(path))
    assert_backbone_equals(model, state)
    assert spec.identity == sha256(path)


@pytest.mark.parametrize("model", ["test_resnet", "resnet50"])
def test_weights_file_of_another_architecture(tmp_path: Path, model: str) -> None:
    path = tmp_path / "weights.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), str(path))
    with pytest.raises(WeightsMismatch) as info:
        create_backbone(model, from_file(path))
    assert str(info.value) == (
        f"weights file {path} holds weights for another architecture; its keys look like "
        "resnet18: pass --model resnet18 (in Python: model='resnet18')"
    )


def test_weights_file_with_missing_and_unexpected_keys(tmp_path: Path, state) -> None:
    partial = {k: v for k, v in state.items() if k != "conv1.0.weight"}
    partial["extra.weight"] = torch.zeros(2)
    path = tmp_path / "partial.pt"
    torch.save(partial, path)
    with pytest.raises(WeightsMismatch) as info:
        create_backbone("test_resnet", from_file(path))
    assert str(info.value) == (
        f"weights file {path} does not fit test_resnet (90 tensors in the file, 90 in "
        "test_resnet; first difference: conv1.0.weight is missing from the file); pass the "
        "model the file was trained for (--model NAME, in Python: model=NAME)"
    )


def test_weights_file_with_other_shapes(tmp_path: Path, state) -> None:
    widened = dict(state)
    widened["conv1.0.weight"] = torch.zeros(24, 3, 3, 3)
    path = tmp_path / "widened.pth"
    torch.save(widened, path)
    with pytest.raises(WeightsMismatch) as info:
        create_backbone("test_resnet", from_file(path))
    assert str(info.value) == (
        f"weights file {path} does not fit test_resnet (90 tensors in the file, 90 in "
        "test_resnet; first difference: conv1.0.weight is [24, 3, 3, 3] in the file, "
        "[16, 3, 3, 3] in test_resnet); pass the model the file was trained for "
        "(--model NAME, in Python: model=NAME)"
    )


@pytest.mark.parametrize("name", ["bad.safetensors", "bad.pth"])
def test_corrupt_weights_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(os.urandom(2048))
    with pytest.raises(WeightsMismatch) as info:
        create_backbone("test_resnet", from_file(path))
    message = str(info.value)
    assert message.startswith(f"cannot read weights file {path} (")
    assert message.endswith("); it must be a .safetensors file or a torch state dict (.pth/.pt)")


def test_weights_file_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    torch.save({"note": "hello", "epoch": 3}, path)
    with pytest.raises(WeightsMismatch) as info:
        create_backbone("test_resnet", from_file(path))
    assert str(info.value) == f"weights file {path} does not hold a state dict of tensors"


def test_missing_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.pth"
    with pytest.raises(ModelError) as info:
        create_backbone("test_resnet", from_file(path))
    assert str(info.value) == f"cannot read weights file {path}: No such file or directory"


def test_index_with_weights_file_then_file_changes(tmp_path: Path, state) -> None:
    weights = tmp_path / "w.safetensors"
    save_file(state, str(weights))
    make_photos(tmp_path / "photos", [1, 2])
    directory = tmp_path / "index"
    index_args = ("--model", "test_resnet", "--workers", "0", "--quiet", "--json")
    built = run_cli(
        "index", tmp_path / "photos", "--index", directory, "--weights", weights, *index_args
    )
    assert built.exit_code == 0, built.stderr
    assert built.json()["added"] == 2
    manifest = Index(directory).manifest()
    assert manifest.model.weights == WeightsSpec("file", str(weights), sha256(weights))
    query = tmp_path / "photos" / "photo_1.jpg"
    found = run_cli("search", query, "--index", directory, "-k", "1", "--format", "paths")
    assert (found.exit_code, found.stdout) == (0, f"{query}\n")

    save_file(trained_state(8), str(weights))  # same name, other weights
    refused = run_cli("search", query, "--index", directory)
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert refused.stderr == (
        f"error: weights file {weights} changed since the index was built (sha256 "
        f"{sha256(weights)[:12]}, expected {manifest.model.weights.identity[:12]}); "
        "restore the original file or rebuild the index\n"
    )


# -- the Hugging Face cache --------------------------------------------------------------------


def fake_hub_cache(hf_home: Path, state, revision: str) -> Path:
    repo = hf_home / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot / "model.safetensors"


def test_pretrained_weights_from_the_hf_cache(tmp_path: Path, monkeypatch, state) -> None:
    revision = hashlib.sha1(b"test").hexdigest()
    cached = fake_hub_cache(tmp_path / "hf", state, revision)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, _, spec = create_backbone("test_resnet", pretrained())
    assert_backbone_equals(model, state)
    assert spec == WeightsSpec("pretrained", identity=f"{HUB_ID}@{revision}", sha256=sha256(cached))
    assert "state_dict" not in model.pretrained_cfg  # the tensors are not kept twice


def test_pretrained_index_records_the_snapshot(tmp_path: Path, monkeypatch, state) -> None:
    revision = "0123456789abcdef0123456789abcdef01234567"
    fake_hub_cache(tmp_path / "hf", state, revision)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    make_photos(tmp_path / "photos", [3])
    args = ("--model", "test_resnet", "--workers", "0", "--quiet")
    result = run_cli("index", tmp_path / "photos", "--index", tmp_path / "i", *args)
    assert result.exit_code == 0, result.stderr
    info = run_cli("info", "--index", tmp_path / "i", "--json").json()
    assert info["pretrained"] is True
    assert info["weights"] == f"pretrained ({HUB_ID}@{revision})"


@pytest.mark.parametrize("offline", [True, False])
def test_no_cached_weights_and_no_network(tmp_path: Path, monkeypatch, offline: bool) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    if offline:
        reason = "HF_HUB_OFFLINE is set"
    else:  # a host that can never resolve stands for "no network"
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setenv("HF_ENDPOINT", "https://hub.retrieval-test.invalid")
        reason = "hub.retrieval-test.invalid is unreachable: "
    started = time.monotonic()
    with pytest.raises(WeightsUnavailable) as info:
        create_backbone("test_resnet", pretrained())
    # Offline must answer at once; the DNS failure is as fast as the resolver says no.
    assert time.monotonic() - started < (5 if offline else 30)
    message = str(info.value)
    assert message.startswith(
        "pretrained weights for test_resnet are not in the Hugging Face cache and could not "
        f"be downloaded ({reason}"
    )
    assert message.endswith(
        "); connect to the network once to cache them, use a local weights file "
        "(--weights FILE, in Python: weights=WeightsSpec('file', FILE)), or build an "
        "untrained backbone (--no-pretrained, in Python: weights=WeightsSpec('untrained'))"
    )
    if offline:
        assert message == (
            "pretrained weights for test_resnet are not in the Hugging Face cache and could "
            "not be downloaded (HF_HUB_OFFLINE is set); connect to the network once to cache "
            "them, use a local weights file (--weights FILE, in Python: "
            "weights=WeightsSpec('file', FILE)), or build an untrained backbone "
            "(--no-pretrained, in Python: weights=WeightsSpec('untrained'))"
        )


def test_no_cached_weights_on_the_command_line(tmp_path: Path) -> None:
    make_photos(tmp_path / "photos", [1])
    directory = tmp_path / "index"
    result = run_cli("index", tmp_path / "photos", "--index", directory, "--model", "test_resnet")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: pretrained weights for test_resnet are not in")
    assert "--weights FILE" in result.stderr and "--no-pretrained" in result.stderr
    # nothing half-built is left behind that a later run would have to match
    assert run_cli("info", "--index", directory).exit_code == 1


# -- untrained and bad names -------------------------------------------------------------------


def test_untrained_is_deterministic_and_leaves_the_global_rng_alone(tiny_embedder) -> None:
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first, _, spec = create_backbone("test_resnet", untrained())
    assert torch.equal(torch.rand(3), expected_draw)
    second, _, _ = create_backbone("test_resnet", untrained())
    other, _, _ = create_backbone("test_resnet", untrained(seed=1))
    assert spec == WeightsSpec("untrained", identity="0")
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert not torch.equal(
        first.state_dict()["conv1.0.weight"], other.state_dict()["conv1.0.weight"]
    )
    x = torch.from_numpy(np.asarray(draw_image(4, (160, 160)), np.float32) / 255)
    x = x.permute(2, 0, 1)[None]
    with torch.no_grad():
        assert torch.equal(first(x), second(x))


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ModelError) as info:
        create_backbone("resnet5O", untrained())
    message = str(info.value)
    assert message.startswith("unknown model 'resnet5O': not a timm model name; did you mean ")
    assert message.endswith("?")
    assert "resnet50" in message.split("did you mean ")[1].rstrip("?").split(", ")


def test_unknown_model_on_the_command_line(tmp_path: Path) -> None:
    save_image(draw_image(1), tmp_path / "p" / "a.png")
    args = [a for a in TINY if a != "test_resnet" and a != "--model"]
    result = run_cli(
        "index", tmp_path / "p", "--index", tmp_path / "i", "--model", "resnt18", *args
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown model 'resnt18': not a timm model name; ")
    assert result.stderr.count("\n") == 1
