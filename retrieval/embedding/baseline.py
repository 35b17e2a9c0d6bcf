"""The naive pipeline `retrieval bench --naive` compares against: what a first script does.

fp32, NCHW (contiguous) tensors, eager under `no_grad`: no channels_last, no autocast, no
inference mode. The weights are the same as the optimised embedder's, so both give the same
vectors up to rounding; only the speed differs.
"""

from __future__ import annotations

import numpy as np
import torch

from ..specs import Preprocess, WeightsSpec
from .backbone import create_backbone


class NaiveEmbedder:
    """`embed((n, H, W, 3) uint8) -> (n, dim) float32` the straightforward way on `device`."""

    def __init__(self, model_name: str, weights: WeightsSpec, device: str = "cpu") -> None:
        model, self._preprocess, _ = create_backbone(model_name, weights)
        self.device = device
        self.model = model.to(device)
        self._mean = torch.tensor(self._preprocess.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(self._preprocess.std, device=device).view(1, 3, 1, 1)

    @property
    def preprocess(self) -> Preprocess:
        return self._preprocess

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.tensor(pixels).permute(0, 3, 1, 2).contiguous().float() / 255.0
            x = (x.to(self.device) - self._mean) / self._std
            features = self.model(x)
            return torch.nn.functional.normalize(features, dim=1).cpu().numpy()
