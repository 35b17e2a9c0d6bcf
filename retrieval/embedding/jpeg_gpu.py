"""JPEG decoding on the GPU (torchvision's nvJPEG), resized and cropped like the CPU path.

Used by `retrieval bench` on CUDA machines to measure whether GPU decoding beats the
worker processes' Pillow decoding. It is not (yet) the indexing path: its bilinear/bicubic
kernels and colour conversion differ from Pillow's by a few levels per pixel, so an index
built with it would not match queries decoded by Pillow bit for bit, and torchvision applies
EXIF orientation on the CPU only. Non-JPEG files are the caller's to route to Pillow.
torchvision 0.29 deprecates these codecs in favour of torchcodec.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from ..specs import Preprocess


def decode_jpegs(datas: list[bytes], preprocess: Preprocess, device: str) -> torch.Tensor:
    """JPEG file bytes -> (n, height, width, 3) uint8 on `device`, as `decode_image` crops.

    One batched decode call on CUDA (nvJPEG); on the CPU the same code runs libjpeg-turbo,
    which is how tests check it without a GPU.
    """
    encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of torchcodec.
        warnings.simplefilter("ignore", DeprecationWarning)
        images = decode_jpeg(
            encoded, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True
        )
    return torch.stack([resize_and_crop(image, preprocess) for image in images])


def resize_and_crop(image: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """(3, H, W) uint8 -> (height, width, 3) uint8: shorter side to `resize`, centre crop."""
    _, h, w = image.shape
    new_long = int(preprocess.resize * max(h, w) / min(h, w))  # decode.py's rounding
    size = (preprocess.resize, new_long) if h <= w else (new_long, preprocess.resize)
    mode = "bicubic" if preprocess.interpolation == "bicubic" else "bilinear"
    x = image[None].float()
    x = F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)
    x = x.round_().clamp_(0, 255).to(torch.uint8)[0]
    out_h, out_w = preprocess.height, preprocess.width
    pad_h, pad_w = max(0, out_h - size[0]), max(0, out_w - size[1])
    if pad_h or pad_w:  # extreme aspect ratios: pad like CenterCrop
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    top = int(round((x.shape[1] - out_h) / 2.0))
    left = int(round((x.shape[2] - out_w) / 2.0))
    return x[:, top : top + out_h, left : left + out_w].permute(1, 2, 0).contiguous()
