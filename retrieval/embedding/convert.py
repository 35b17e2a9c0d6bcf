"""Converting a state dict saved under other key names (efficientnet_pytorch's `_blocks.0.
_depthwise_conv.weight`, ...) into a timm model's, by position.

Two implementations of one architecture list their tensors in the same order, so the n-th
tensor of the file is the n-th of timm's state dict. The mapping is accepted only when the
counts agree and every pair has the same shape; otherwise nothing is written and the first
misfit is named. The file is read once (`weights.read_weights`): the SHA-256 reported is that
of the bytes converted. Returns safetensors bytes; writing them is the caller's (ops/).
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch

from ..errors import WeightsMismatch
from .backbone import _check_model_name
from .weights import read_weights, state_from_bytes, without_classifier


@dataclass(frozen=True)
class Converted:
    """A state dict renamed for a timm model, serialised as safetensors.

    `tensors`: how many were mapped; `classifier`: whether the file's classifier came along
    (a headless file maps onto the backbone alone, which is all `--weights` loads);
    `source_sha256`: of the file read.
    """

    data: bytes
    tensors: int
    classifier: bool
    source_sha256: str
    first_pair: tuple[str, str]
    last_pair: tuple[str, str]


def convert_state(path: str, model_name: str) -> Converted:
    """Read `path` (a torch state dict, which keeps its insertion order) once and rename
    its tensors, in order, to `model_name`'s keys. Raises WeightsMismatch naming the first
    misfit (count or shape) or for a .safetensors source, ModelError for an unknown model
    or an unreadable file."""
    _check_model_name(model_name)
    if path.endswith(".safetensors"):
        raise WeightsMismatch(
            f"cannot convert {path} by position: a .safetensors file does not keep the order "
            "its tensors were saved in; convert the .pth/.pt state dict the other "
            "implementation saved"
        )
    data, checksum = read_weights(path)
    source = state_from_bytes(path, data)
    del data
    with torch.device("meta"):  # keys and shapes only: no memory, no initialisation
        model = timm.create_model(model_name, pretrained=False)
    classifier = str(getattr(model, "pretrained_cfg", {}).get("classifier") or "fc")
    full = model.state_dict()
    backbone = without_classifier(full, classifier)
    with_head = len(source) == len(full)
    target = full if with_head else backbone
    _check_fit(path, model_name, source, target, len(full), len(backbone))
    renamed = {
        mine: tensor.detach().contiguous()
        for mine, tensor in zip(target, source.values(), strict=True)
    }
    from safetensors.torch import save

    pairs = list(zip(source, target, strict=True))
    return Converted(save(renamed), len(renamed), with_head, checksum, pairs[0], pairs[-1])


def _check_fit(
    path: str,
    name: str,
    source: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    full: int,
    backbone: int,
) -> None:
    """Raise WeightsMismatch unless `source` and `target` pair up, in order, by shape."""
    if len(source) != len(target):
        raise WeightsMismatch(
            f"weights file {path} does not map onto {name}: it holds {len(source)} tensors, "
            f"{name} has {full} ({backbone} without its classifier); pass the --model the "
            "file was trained as"
        )
    for index, ((theirs, tensor), (mine, slot)) in enumerate(
        zip(source.items(), target.items(), strict=True)
    ):
        if tuple(tensor.shape) != tuple(slot.shape):
            raise WeightsMismatch(
                f"weights file {path} does not map onto {name}: tensor {index} {theirs} is "
                f"{list(tensor.shape)}, but {name}'s {mine} is {list(slot.shape)}; pass the "
                "--model the file was trained as"
            )
