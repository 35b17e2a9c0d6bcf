"""Creating a timm backbone with its classifier removed, and finding its weights.

Three sources of weights, recorded in the manifest as a `WeightsSpec`:

* ``pretrained``: timm's default pretrained tag, from the Hugging Face cache ($HF_HOME,
  $HF_HUB_CACHE); downloaded on first use when the hub is reachable; $HF_HUB_OFFLINE honoured.
  Identified by hub id @ snapshot revision and the SHA-256 of the cached file.
* ``file``: a local state dict (.safetensors, .pth, .pt), identified by path and SHA-256.
* ``untrained``: initialised from a fixed seed, so the same network can be rebuilt for queries.

A weights file is read once: the bytes hashed are the bytes loaded (`weights.read_weights`),
and a recorded SHA-256 is verified before they are. Nothing ever falls back from one source
to another.
"""

from __future__ import annotations

import difflib
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
from .weights import first_line, misfit, read_weights, state_from_bytes, without_classifier

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
        model, spec = _create_pretrained(model_name, weights)
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


def _create_pretrained(name: str, weights: WeightsSpec) -> tuple[torch.nn.Module, WeightsSpec]:
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    if not hub_id:
        raise ModelError(
            f"timm has no pretrained weights for {name} on the Hugging Face hub; use a local "
            "weights file (--weights FILE, in Python: weights=WeightsSpec('file', FILE)) or an "
            "untrained backbone (--no-pretrained, in Python: weights=WeightsSpec('untrained'))"
        )
    local = find_cached_weights(hub_id) or _download_weights(name, hub_id)
    identity = _hub_identity(hub_id, local)
    data, checksum = read_weights(local)
    if weights.sha256 and weights.sha256 != checksum:
        raise WeightsMismatch(
            f"pretrained weights {local} ({identity}) changed since the index was built "
            f"(sha256 {checksum[:12]}, expected {weights.sha256[:12]}); the Hugging Face "
            "cache holds other weights under the same name: restore the original file "
            "(delete it and download it again), or rebuild the index"
        )
    state = state_from_bytes(local, data)
    del data
    try:
        model = timm.create_model(
            name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"state_dict": state}
        )
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise WeightsMismatch(
            f"cached weights {local} do not load into {name}: {first_line(exc)}"
        ) from None
    for cfg_dict in {id(c): c for c in (model.pretrained_cfg, model.default_cfg)}.values():
        cfg_dict.pop("state_dict", None)  # the tensors are in the model now; do not keep two
    return model, WeightsSpec("pretrained", identity=identity, sha256=checksum)


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
    """SHA-256 of a file (read whole)."""
    return read_weights(path)[1]


def _create_from_file(name: str, weights: WeightsSpec) -> tuple[torch.nn.Module, WeightsSpec]:
    path = str(weights.path)
    data, checksum = read_weights(path)
    if weights.identity and weights.identity != checksum:
        raise WeightsMismatch(
            f"weights file {path} changed since the index was built (sha256 {checksum[:12]}, "
            f"expected {weights.identity[:12]}); restore the original file or rebuild the index"
        )
    state = state_from_bytes(path, data)
    del data
    model = timm.create_model(name, pretrained=False, num_classes=0)
    classifier = str(model.pretrained_cfg.get("classifier") or "fc")
    try:
        missing, unexpected = model.load_state_dict(
            without_classifier(state, classifier), strict=False
        )
    except RuntimeError:  # shapes differ
        raise misfit(path, name, model, state) from None
    if missing or unexpected:
        raise misfit(path, name, model, state)
    return model, WeightsSpec("file", path=path, identity=checksum)
