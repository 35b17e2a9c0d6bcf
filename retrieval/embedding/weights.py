"""Reading a weights file exactly once, and saying which architecture a misfit file is for.

`read_weights` reads the whole file into memory, hashes those bytes and parses those same
bytes, so the checksum recorded (or verified) is the checksum of the weights loaded: a file
swapped between the hash and the load cannot slip in. Memory: the file's size, once more,
while the tensors are built (~100 MB for resnet50).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping

import timm
import torch

from ..errors import ModelError, WeightsMismatch

#: Candidate architectures built (on the meta device: no memory, ~60 ms each) to name the
#: one a misfit file is for; the family's plainest names are tried first.
MAX_GUESSES = 40


def read_weights(path: str) -> tuple[bytes, str]:
    """(the file's bytes, their SHA-256 hex digest); ModelError if it cannot be read."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ModelError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    return data, hashlib.sha256(data).hexdigest()


def state_from_bytes(path: str, data: bytes) -> dict[str, torch.Tensor]:
    """The state dict held in `data` (safetensors if `path` ends in .safetensors, else a
    torch pickle loaded with weights_only); nested `state_dict`/`model`/`state_dict_ema`
    and a `module.` prefix are unwrapped. Raises WeightsMismatch naming `path`."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load as load_safetensors

            state = load_safetensors(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch/safetensors raise many kinds on bad files
        raise WeightsMismatch(
            f"cannot read weights file {path} ({first_line(exc)}); "
            "it must be a .safetensors file or a torch state dict (.pth/.pt)"
        ) from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatch(f"weights file {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def without_classifier(state: Mapping[str, torch.Tensor], classifier: str) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(classifier + ".")}


def misfit(path: str, name: str, model: torch.nn.Module, state: dict) -> WeightsMismatch:
    """The error for a state dict that does not load into `model` (timm `name`).

    Names the architecture whose keys and shapes the file matches when one of `name`'s
    family does; otherwise counts the tensors and shows the first difference.
    """
    guesses = guess_architecture(state, name)
    if guesses:
        shown = " or ".join(guesses)
        return WeightsMismatch(
            f"weights file {path} holds weights for another architecture; its keys look like "
            f"{shown}: pass --model {guesses[0]} (in Python: model={guesses[0]!r})"
        )
    classifier = str(model.pretrained_cfg.get("classifier") or "fc")
    mine = _shapes(without_classifier(model.state_dict(), classifier))
    theirs = _shapes(without_classifier(state, classifier))
    return WeightsMismatch(
        f"weights file {path} does not fit {name} ({len(theirs)} tensors in the file, "
        f"{len(mine)} in {name}; {_difference(theirs, mine, name)}); "
        "pass the model the file was trained for (--model NAME, in Python: model=NAME)"
    )


def guess_architecture(state: Mapping[str, torch.Tensor], name: str) -> list[str]:
    """timm models of `name`'s family (resnet50 -> resnet*) whose backbone keys and shapes
    equal the file's (classifier keys aside), plainest name first; [] if none does."""
    family = re.match(r"[a-z]+", name.removeprefix("test_"))
    if family is None:
        return []
    candidates = sorted(timm.list_models(family.group() + "*"), key=lambda n: (len(n), n))
    found = []
    for candidate in candidates[:MAX_GUESSES]:
        try:
            with torch.device("meta"):
                net = timm.create_model(candidate, pretrained=False, num_classes=0)
        except Exception:  # noqa: BLE001 - a candidate that cannot be built is not the one
            continue
        classifier = str(net.pretrained_cfg.get("classifier") or "fc")
        if _shapes(net.state_dict()) == _shapes(without_classifier(state, classifier)):
            found.append(candidate)
    return [n for n in found if n != name][:3]


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _difference(
    theirs: dict[str, tuple[int, ...]], mine: dict[str, tuple[int, ...]], name: str
) -> str:
    """The first difference in `name`'s key order: a key missing, extra, or shaped apart."""
    for key, shape in mine.items():
        if key not in theirs:
            return f"first difference: {key} is missing from the file"
        if theirs[key] != shape:
            return (
                f"first difference: {key} is {list(theirs[key])} in the file, "
                f"{list(shape)} in {name}"
            )
    extra = next((k for k in theirs if k not in mine), None)
    return f"first difference: {extra} is not in {name}" if extra else "no difference in keys"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
