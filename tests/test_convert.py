"""`retrieval weights convert`: tensors renamed by position onto a timm model's keys, refused
on any count or shape mismatch, written atomically as safetensors that --weights loads."""

from __future__ import annotations

import os
from pathlib import Path

import _weights
import pytest
import timm
import torch
from conftest import draw_image, run_cli, save_image
from safetensors.torch import load_file

from retrieval import ConvertReport, WeightsMismatch, convert_weights

LITE0 = _weights.LITE0
lite0_source_file = _weights.lite0_source_file  # the session fixtures
lite0_weights = _weights.lite0_weights


def _foreign_state(headless: bool = False, seed: int = 3) -> dict[str, torch.Tensor]:
    """test_resnet's state dict (trained-looking: seeded random values) under other names;
    with `headless` the classifier is left out (a headless file)."""
    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", pretrained=False)
    state = model.state_dict()
    if headless:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    return {
        f"_other.{i}.{k.replace('.', '_')}": v.clone() for i, (k, v) in enumerate(state.items())
    }


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(state, path)
    return path


def test_converted_tensors_are_the_source_tensors_in_order(tmp_path: Path) -> None:
    source = _save(_foreign_state(), tmp_path / "other.pth")
    report = convert_weights(source, "test_resnet", tmp_path / "out.safetensors")
    converted = load_file(tmp_path / "out.safetensors")
    expected = timm.create_model("test_resnet", pretrained=False).state_dict()
    assert set(converted) == set(expected)
    for (name, tensor), key in zip(torch.load(source).items(), expected, strict=True):
        assert torch.equal(converted[key], tensor), (name, key)
    assert isinstance(report, ConvertReport)
    assert report.tensors == len(expected) and report.classifier is True
    assert report.first_pair == ("_other.0.conv1_0_weight", "conv1.0.weight")
    assert report.last_pair[1] == "fc.bias"
    assert report.size == os.path.getsize(tmp_path / "out.safetensors")


def test_headless_file_maps_onto_the_backbone_and_loads_as_weights(tmp_path: Path) -> None:
    source = _save(_foreign_state(headless=True), tmp_path / "headless.pt")
    out = tmp_path / "w.safetensors"
    report = convert_weights(source, "test_resnet", out)
    assert report.classifier is False
    assert not any(k.startswith("fc.") for k in load_file(out))
    photos = tmp_path / "photos"
    save_image(draw_image(1), photos / "a.png")
    result = run_cli(
        "index",
        photos,
        "--index",
        tmp_path / "ix",
        "--model",
        "test_resnet",
        "--weights",
        out,
        "--workers",
        "0",
        "--quiet",
    )
    assert result.exit_code == 0, result.stderr


def test_cli_prints_what_it_did_and_the_file_loads(tmp_path: Path) -> None:
    source = _save(_foreign_state(), tmp_path / "other.pth")
    out = tmp_path / "w.safetensors"
    result = run_cli("weights", "convert", source, "--model", "test_resnet", "-o", out)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        f"converted {len(torch.load(source))} tensors (with its classifier) from {source} (sha256 "
    )
    assert lines[1] == "  first: _other.0.conv1_0_weight -> conv1.0.weight"
    assert lines[-1].startswith(f"wrote {out} (")
    assert lines[-1].endswith(f"use it with --model test_resnet --weights {out}")
    result = run_cli("weights", "convert", source, "--model", "test_resnet", "-o", out, "--json")
    assert result.json()["tensors"] == len(torch.load(source))


def test_a_count_mismatch_is_refused_and_nothing_written(tmp_path: Path) -> None:
    state = _foreign_state()
    state.pop(next(iter(state)))
    source = _save(state, tmp_path / "short.pth")
    out = tmp_path / "w.safetensors"
    n = len(timm.create_model("test_resnet").state_dict())
    result = run_cli("weights", "convert", source, "--model", "test_resnet", "-o", out)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: weights file {source} does not map onto test_resnet: it holds {n - 1} "
        f"tensors, test_resnet has {n} ({n - 2} without its classifier); pass the --model "
        "the file was trained as\n"
    )
    assert not out.exists() and os.listdir(tmp_path) == ["short.pth"]


def test_a_shape_mismatch_names_the_first_pair(tmp_path: Path) -> None:
    state = _foreign_state()
    keys = list(state)
    state[keys[1]] = torch.zeros(5)  # same count; tensor 1 shaped apart
    source = _save(state, tmp_path / "bad.pth")
    expected = list(timm.create_model("test_resnet").state_dict().items())[1]
    with pytest.raises(WeightsMismatch) as caught:
        convert_weights(source, "test_resnet", tmp_path / "w.safetensors")
    assert str(caught.value) == (
        f"weights file {source} does not map onto test_resnet: tensor 1 {keys[1]} is [5], "
        f"but test_resnet's {expected[0]} is {list(expected[1].shape)}; pass the --model the "
        "file was trained as"
    )
    assert not (tmp_path / "w.safetensors").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--model", "test_resnet", "-o", "{tmp}/w.pth"),
            "error: output {tmp}/w.pth must end in .safetensors (the suffix tells --weights the "
            "format); pass e.g. -o {tmp}/w.safetensors\n",
        ),
        (
            ("--model", "no_such_net", "-o", "{tmp}/w.safetensors"),
            "error: unknown model 'no_such_net': not a timm model name\n",
        ),
    ],
)
def test_bad_requests_are_one_line_errors(tmp_path: Path, args: tuple[str, ...], message: str):
    source = _save(_foreign_state(), tmp_path / "other.pth")
    argv = [a.format(tmp=tmp_path) for a in args]
    result = run_cli("weights", "convert", source, *argv)
    assert result.exit_code == 1
    assert result.stderr == message.format(tmp=tmp_path)


def test_a_safetensors_source_is_refused_its_order_is_lost(tmp_path: Path) -> None:
    source = _save(_foreign_state(), tmp_path / "other.pth")
    convert_weights(source, "test_resnet", tmp_path / "a.safetensors")
    result = run_cli(
        "weights", "convert", tmp_path / "a.safetensors", "--model", "test_resnet",
        "-o", tmp_path / "b.safetensors",
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot convert {tmp_path / 'a.safetensors'} by position: a .safetensors file "
        "does not keep the order its tensors were saved in; convert the .pth/.pt state dict "
        "the other implementation saved\n"
    )
    assert not (tmp_path / "b.safetensors").exists()


def test_a_file_that_is_no_state_dict_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "notes.pth"
    source.write_bytes(b"not a pickle")
    result = run_cli(
        "weights", "convert", source, "--model", "test_resnet", "-o", tmp_path / "w.safetensors"
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot read weights file {source} (")
    assert result.stderr.count("\n") == 1


def test_the_real_lite0_file_converts(lite0_source_file: Path, tmp_path: Path) -> None:
    report = convert_weights(lite0_source_file, LITE0, tmp_path / "lite0.safetensors")
    assert report.tensors == 296 and report.classifier
    assert report.first_pair == ("_conv_stem.weight", "conv_stem.weight")
    assert report.last_pair == ("_fc.bias", "classifier.bias")


def test_converted_lite0_classifies_the_cat_as_a_cat(lite0_weights: Path) -> None:
    """The proof the by-position mapping is right: ImageNet behaviour survives it. Chelsea
    (a tabby) must get a cat class (timm's ImageNet ids 281-285) in its top 5."""
    from retrieval.embedding.backbone import preprocess_for
    from retrieval.sources.decode import decode_image

    model = timm.create_model(LITE0, pretrained=False).eval()
    model.load_state_dict(load_file(lite0_weights))
    photo = Path(__file__).parents[1] / "data" / "photos" / "chelsea.jpg"
    pixels = decode_image(photo.read_bytes(), preprocess_for(model))[0]
    x = (torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        top5 = model(x[None])[0].topk(5).indices.tolist()
    assert set(top5) & set(range(281, 286)), top5
    assert top5[0] in range(281, 286), top5
