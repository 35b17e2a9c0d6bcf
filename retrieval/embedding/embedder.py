"""Running a backbone on batches of pixels: device, precision, and L2-normalised output."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ModelError, UsageError
from ..specs import ModelInfo, Preprocess, WeightsSpec
from .backbone import create_backbone

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Embedder:
    """A backbone ready to embed: `embed(pixels)` -> L2-normalised float32 vectors.

    `device` is "cpu" or "cuda"; `precision` is "fp32", "bf16" or "fp16" (autocast; weights
    stay fp32, so one model serves every precision).
    """

    def __init__(self, model: torch.nn.Module, info: ModelInfo, device: str, precision: str):
        self.info = info
        self.device = device
        self.precision = precision
        self.model = model.to(device=device, memory_format=torch.channels_last)
        preprocess = info.preprocess
        std = torch.tensor(preprocess.std, dtype=torch.float32, device=device)
        mean = torch.tensor(preprocess.mean, dtype=torch.float32, device=device)
        # (x / 255 - mean) / std == x * scale - shift, per channel
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1)
        self._shift = (mean / std).view(1, 3, 1, 1)

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def preprocess(self) -> Preprocess:
        return self.info.preprocess

    def describe(self) -> str:
        """e.g. 'cpu, bf16' for the line the CLI prints."""
        return f"{self.device}, {self.precision}"

    @torch.inference_mode()
    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 -> (n, dim) float32, each row of unit length (or zero)."""
        if pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"expected (n, H, W, 3) uint8 pixels, got {pixels.shape}")
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = torch.from_numpy(np.ascontiguousarray(pixels))
        if self.device == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        # NHWC memory viewed as NCHW is exactly the channels_last layout: no copy.
        x = x.permute(0, 3, 1, 2).float().mul_(self._scale).sub_(self._shift)
        x = x.contiguous(memory_format=torch.channels_last)
        if self.precision in _DTYPES:
            with torch.autocast(self.device, dtype=_DTYPES[self.precision]):
                features = self.model(x)
        else:
            features = self.model(x)
        if features.ndim != 2:
            raise ModelError(
                f"{self.info.name} returned features of shape {tuple(features.shape)}, not "
                "pooled vectors; choose a model with global pooling such as resnet50"
            )
        features = torch.nn.functional.normalize(features.float(), dim=1)
        return features.cpu().numpy().astype(np.float32, copy=False)


def load_embedder(
    model_name: str, weights: WeightsSpec, device: str = "auto", precision: str = "auto"
) -> Embedder:
    """Create the backbone and wrap it for inference on the resolved device and precision."""
    resolved_device = resolve_device(device)
    resolved_precision = resolve_precision(precision, resolved_device)
    model, preprocess, spec = create_backbone(model_name, weights)
    info = ModelInfo(model_name, spec, preprocess, int(model.num_features))
    return Embedder(model, info, resolved_device, resolved_precision)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without one is an error."""
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        build = torch.version.cuda or "no CUDA"
        raise UsageError(
            f"--device cuda: torch {torch.__version__} ({build}) sees no CUDA GPU; "
            "check the driver (nvidia-smi) or use --device cpu"
        )
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    return device


def resolve_precision(precision: str, device: str) -> str:
    """'auto' -> bf16 where the hardware does it natively (CUDA, AVX-512-BF16/AMX CPUs)."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device == "cpu":
        raise UsageError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32")
    return precision


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises AVX-512-BF16 or AMX-BF16 (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def configure_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads (None: leave torch's default, one per core)."""
    if threads:
        torch.set_num_threads(max(1, threads))
