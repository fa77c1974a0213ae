"""Pixels to canvases and back: resize, normalise, stack the example above the query.

Shared by inference, video and tuning, so all of them see what the released model saw: images resized bicubic
with antialiasing (as PIL resizes them: the authors' script and ``transformers``' processor, and the training
pairs of :mod:`seggpt.data`), masks nearest, both /255 then ImageNet mean/std.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(3, 1, 1)
    return mean, std


def normalize(x: Tensor) -> Tensor:
    """(..., 3, H, W) in [0, 255] -> normalised space."""
    x = x.float()
    mean, std = _stats(x)
    return (x / 255.0 - mean) / std


def denormalize(x: Tensor) -> Tensor:
    """(..., 3, H, W) normalised -> [0, 255] float, clipped as the released script does."""
    x = x.float()
    mean, std = _stats(x)
    return ((x * std + mean) * 255.0).clamp(0, 255)


def to_chw(array: np.ndarray) -> Tensor:
    """(H, W, 3) uint8/float array -> (3, H, W) float tensor, values unchanged."""
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float()


def crosswise(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True when one (height, width) is portrait and the other landscape: resizing one to the other squeezes it."""
    return (a[0] - a[1]) * (b[0] - b[1]) < 0


def resize_image(x: Tensor, size: tuple[int, int], clamp: bool = True) -> Tensor:
    """Bicubic resize of (..., 3, H, W) in [0, 255], clamped back to [0, 255] (bicubic overshoots); ``clamp=False``
    for tensors already normalised (any range), resized the same way.

    Antialiased, as PIL resizes (its bicubic kernel, widened by the factor when shrinking): within 0.3 of 255 on
    average of ``PIL.Image.resize(size, BICUBIC)``, which rounds to bytes. Without antialiasing a shrinking bicubic
    reads 4 input pixels per output pixel and skips the rest: a 3000-pixel photograph at 448 loses most of its
    pixels to aliasing (18 of 255 off PIL at worst on a CamVid frame at 448, 74 at 256).
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x.float()
    lead = x.shape[:-3]
    y = F.interpolate(
        x.reshape(-1, *x.shape[-3:]).float(), size=size, mode="bicubic", align_corners=False, antialias=True
    )
    return (y.clamp(0, 255) if clamp else y).reshape(*lead, *y.shape[-3:])


def resize_mask(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest resize of a colour mask (..., 3, H, W) or a label map (..., H, W) (no new colours or labels).

    Each output pixel takes the input pixel under its centre, as PIL's ``NEAREST`` does (torch's "nearest-exact";
    its "nearest" takes the one under the top-left corner instead): the released script, ``transformers``'
    processor and this project's training pairs resize masks with PIL.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    dtype = x.dtype
    y = F.interpolate(x.reshape(-1, 1, *x.shape[-2:]).float(), size=size, mode="nearest-exact")
    return y.reshape(*x.shape[:-2], *size).to(dtype)


def stack_canvas(top: Tensor, bottom: Tensor) -> Tensor:
    """Example above query: (..., 3, H, W) twice -> (..., 3, 2H, W)."""
    return torch.cat([top, bottom], dim=-2)


def query_half(canvas: Tensor) -> Tensor:
    """The lower half (the answer) of a canvas (..., 3, 2H, W) -> (..., 3, H, W)."""
    return canvas[..., canvas.shape[-2] // 2 :, :]
