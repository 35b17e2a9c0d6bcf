"""Creating a timm backbone with its classifier removed, and finding its weights.

Three sources of weights, recorded in the manifest as a `WeightsSpec`:

* ``pretrained``: timm's default pretrained tag, from the Hugging Face cache ($HF_HOME,
  $HF_HUB_CACHE); downloaded on first use when the hub is reachable; $HF_HUB_OFFLINE honoured.
* ``file``: a local state dict (.safetensors, .pth, .pt), identified by path and SHA-256.
* ``untrained``: initialised from a fixed seed, so the same network can be rebuilt for queries.

Nothing ever falls back from one source to another.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import socket
import urllib.parse

import timm
import torch
from timm.data import resolve_model_data_config

from .. import defaults
from ..errors import ModelError, WeightsMismatch, WeightsUnavailable
from ..specs import Preprocess, WeightsSpec

_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def pretrained() -> WeightsSpec:
    return WeightsSpec("pretrained")


def from_file(path: str | os.PathLike[str]) -> WeightsSpec:
    return WeightsSpec("file", path=os.path.abspath(os.fspath(path)))


def untrained(seed: int = defaults.UNTRAINED_SEED) -> WeightsSpec:
    return WeightsSpec("untrained", identity=str(seed))


def create_backbone(
    model_name: str, weights: WeightsSpec
) -> tuple[torch.nn.Module, Preprocess, WeightsSpec]:
    """Build `model_name` with `weights`, classifier removed, in eval mode on the CPU.

    Returns (model, preprocessing from the model's data config, the weights spec with its
    identity filled in). Raises ModelError (or a subclass) with what to do instead.
    """
    _check_model_name(model_name)
    if weights.source == "pretrained":
        model, spec = _create_pretrained(model_name)
    elif weights.source == "file":
        model, spec = _create_from_file(model_name, weights)
    elif weights.source == "untrained":
        model, spec = _create_untrained(model_name, int(weights.identity or 0)), weights
    else:
        raise ModelError(f"unknown weights source {weights.source!r}")
    model.eval()
    if not getattr(model, "num_features", 0):
        raise ModelError(f"{model_name} has no pooled features; choose a CNN such as resnet50")
    return model, preprocess_for(model), spec


def preprocess_for(model: torch.nn.Module) -> Preprocess:
    """The eval-time preprocessing timm's data config prescribes for `model`."""
    cfg = resolve_model_data_config(model)
    _, height, width = cfg["input_size"]
    crop_pct = cfg.get("crop_pct") or 1.0
    return Preprocess(
        height=int(height),
        width=int(width),
        resize=int(math.floor(min(height, width) / crop_pct)),
        interpolation=str(cfg.get("interpolation") or "bicubic"),
        mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
    )


def _check_model_name(name: str) -> None:
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ModelError(f"unknown model {name!r}: not a timm model name{hint}")


def _create_untrained(name: str, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model(name, pretrained=False, num_classes=0)


# -- pretrained, through the Hugging Face cache ------------------------------------------


def _create_pretrained(name: str) -> tuple[torch.nn.Module, WeightsSpec]:
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    if not hub_id:
        raise ModelError(
            f"timm has no pretrained weights for {name} on the Hugging Face hub; "
            "pass --weights FILE or --no-pretrained"
        )
    local = find_cached_weights(hub_id) or _download_weights(name, hub_id)
    try:
        model = timm.create_model(
            name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": local}
        )
    except (RuntimeError, OSError, ValueError) as exc:
        raise WeightsMismatch(f"cached weights {local} do not load into {name}: {exc}") from None
    return model, WeightsSpec("pretrained", path=None, identity=_hub_identity(hub_id, local))


def hub_cache_dir() -> str:
    """The Hugging Face hub cache, resolved from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return os.path.join(home, "hub")


def find_cached_weights(hub_id: str) -> str | None:
    """Path of `hub_id`'s weights in the local cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in _HUB_FILES:
        found = try_to_load_from_cache(hub_id, filename, cache_dir=hub_cache_dir())
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _download_weights(name: str, hub_id: str) -> str:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise WeightsUnavailable(name, "HF_HUB_OFFLINE is set")
    _check_hub_reachable(name)
    from huggingface_hub import hf_hub_download

    last: Exception | None = None
    for filename in _HUB_FILES:
        try:
            return hf_hub_download(hub_id, filename, cache_dir=hub_cache_dir())
        except Exception as exc:  # noqa: BLE001 - the hub client raises many kinds
            last = exc
    raise WeightsUnavailable(name, f"download failed: {last}")


def _check_hub_reachable(name: str) -> None:
    """Fail in milliseconds, not after the hub client's minute of retries."""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    host = urllib.parse.urlparse(endpoint).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        raise WeightsUnavailable(name, f"{host} is unreachable: {exc.strerror or exc}") from None


def _hub_identity(hub_id: str, local: str) -> str:
    parts = local.split(os.sep)
    revision = parts[parts.index("snapshots") + 1] if "snapshots" in parts else "local"
    return f"{hub_id}@{revision}"


# -- a local weights file ------------------------------------------------------------------


def file_sha256(path: str) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _create_from_file(name: str, weights: WeightsSpec) -> tuple[torch.nn.Module, WeightsSpec]:
    path = str(weights.path)
    try:
        checksum = file_sha256(path)
    except OSError as exc:
        raise ModelError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    if weights.identity and weights.identity != checksum:
        raise WeightsMismatch(
            f"weights file {path} changed since the index was built (sha256 {checksum[:12]}, "
            f"expected {weights.identity[:12]}); restore the original file or rebuild the index"
        )
    model = timm.create_model(name, pretrained=False, num_classes=0)
    state = _read_state_dict(path)
    classifier = str(model.pretrained_cfg.get("classifier") or "fc")
    state = {k: v for k, v in state.items() if not _is_classifier(k, classifier)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise WeightsMismatch(
            f"weights file {path} does not fit {name}: {_first_line(exc)}; "
            "pass the --model the file was trained for"
        ) from None
    if missing or unexpected:
        raise WeightsMismatch(
            f"weights file {path} does not fit {name}: "
            f"{_keys(missing=missing, unexpected=unexpected)}; "
            "pass the --model the file was trained for"
        )
    return model, WeightsSpec("file", path=path, identity=checksum)


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch/safetensors raise many kinds on bad files
        raise WeightsMismatch(
            f"cannot read weights file {path} ({_first_line(exc)}); "
            "it must be a .safetensors file or a torch state dict (.pth/.pt)"
        ) from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatch(f"weights file {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_classifier(key: str, classifier: str) -> bool:
    return key.startswith(classifier + ".")


def _keys(**groups: list[str]) -> str:
    parts = []
    for kind, keys in groups.items():
        if keys:
            shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
            parts.append(f"{len(keys)} {kind} keys ({shown})")
    return ", ".join(parts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
