"""Dynamic int8 linear layers for CPU inference.

Weights are quantised once, symmetrically per output channel; activations are quantised on the fly,
symmetrically, and the product runs as an int8 x int8 matmul with int32 accumulation, rescaled to the input's
floating dtype. Everything else in the model stays in floating point. Two kernels:

- ``onednn`` (where PyTorch has oneDNN: x86 and most Arm builds): ``torch.ops.onednn.qlinear_pointwise``, the
  kernel of PyTorch's own x86 int8 inference, on a weight packed once for it, with the rescaling, the bias, the
  output dtype and the MLP's GELU fused into the matmul (VNNI / AMX-int8 where the CPU has them). It takes one
  activation scale per call, so activations are quantised per sample (one call per entry of the batch), which
  keeps every sample's answer independent of the others in its batch.
- ``int_mm`` (elsewhere, on x86 CPUs without VNNI, where oneDNN's int8 products saturate, and where a probe finds
  oneDNN's kernel slow for the CPU, :func:`_onednn_fast`): activations
  quantised per token, the exact integer product (:func:`int8_matmul`), then rescaled in separate passes. On the CPU
  the product is a float32 matmul of the int8 values, exact because every partial sum is an integer below 2**24:
  ``torch._int_mm`` there was measured 20 times slower than float32 (AVX2-only CPU, 4096x192 by 192x768: 400 ms
  against 18). So without VNNI int8 runs at about float32's speed, with int8's answers.

Why not ``torch.ao.quantization.quantize_dynamic``: it is deprecated (it warns so at every call) and its
weights are per tensor. Why not torchao: on the CPU its eager int8 path is ``torch._int_mm`` behind a tensor
subclass, and it is an extra dependency whose releases follow torch's closely. ``benchmarks/model_forward.py``
measures both against this module (``--variants "int8 torch.ao query-only" "int8 torchao query-only"``).
"""

from __future__ import annotations

import functools
import platform
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seggpt.modeling.layers import Mlp

INT8_MAX = 127.0
ACTIVATIONS = ("none", "gelu")
# Products of values in [-127, 127] summed over at most this many terms stay within 2**24 (127**2 * 1040 < 2**24),
# where float32 holds every integer: a float32 matmul over such a slice of K gives the integer product exactly.
EXACT_FLOAT_K = 1040


def int8_matmul(q: Tensor, w: Tensor) -> Tensor:
    """The exact integer product q @ w.T of int8 (M, K) and (N, K) with values in [-127, 127]: (M, N) int32.

    On the CPU a float32 matmul per slice of at most :data:`EXACT_FLOAT_K` of K, the slices summed in int32 (far
    faster than ``torch._int_mm`` there); elsewhere ``torch._int_mm``."""
    if q.device.type != "cpu":
        return torch._int_mm(q, w.t())
    acc = None
    for k in range(0, q.shape[1], EXACT_FLOAT_K):
        part = (q[:, k : k + EXACT_FLOAT_K].float() @ w[:, k : k + EXACT_FLOAT_K].float().t()).to(torch.int32)
        acc = part if acc is None else acc.add_(part)
    return acc


def _onednn_exact() -> bool:
    """oneDNN's int8 kernel, where it computes exactly: x86 without VNNI forms its int8 products in saturating
    int16 pairs (vpmaddubsw), and on such a CPU (AVX2 only) its answers were measured up to 0.3 off."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")):
        return False
    vnni = getattr(torch.cpu, "_is_vnni_supported", None)
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    return not (x86 and vnni is not None and not vnni())


def _onednn_available() -> bool:
    """oneDNN's int8 kernel, where it is exact and fast (:func:`_onednn_exact`, :func:`_onednn_fast`)."""
    return _onednn_exact() and _onednn_fast()


# oneDNN has no fast int8 matmul for every CPU that has VNNI: on an AMD EPYC with AVX512-VNNI and no AMX (torch
# 2.13, session 26) it packed the weight in a layout no kernel of that CPU reads and ran every product in its
# reference implementation (``ref_int8`` in ONEDNN_VERBOSE), 800 times slower than fp32. A probe finds that once.
# The reference kernel is two orders of magnitude slower; a fast one is faster than the int_mm path.
ONEDNN_SLOWER_LIMIT = 4.0


def _qlinear(
    q: Tensor,
    scale: Tensor,
    packed: Tensor,
    weight_scale: Tensor,
    zero_points: Tensor,
    bias: Tensor | None,
    dtype: torch.dtype,
    activation: str,
) -> Tensor:
    """oneDNN's int8 linear layer: int8 q (one scale) by the packed int8 weight (a scale per output channel), the
    bias and ``activation`` fused, output in ``dtype``."""
    algorithm = "none" if activation == "gelu" else ""  # "none": exact GELU (erf), as nn.GELU()
    zero = torch.zeros((), dtype=torch.long)
    return torch.ops.onednn.qlinear_pointwise.tensor(
        q, scale, zero, packed, weight_scale, zero_points, bias, 1.0, 0, dtype, activation, [], algorithm
    )


def _probe_seconds() -> tuple[float, float]:
    """Seconds for one (64, 256) x (256, 256) int8 product with oneDNN's kernel and with the int_mm path (best
    of three, after one untimed call each)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-127, 128, (256, 256), generator=g, dtype=torch.int8)
    x = torch.randint(-127, 128, (64, 256), generator=g, dtype=torch.int8)
    packed = torch.ops.onednn.qlinear_prepack(w, None)
    ones, zeros = torch.ones(256), torch.zeros(256, dtype=torch.long)

    def onednn():
        return _qlinear(x, torch.ones(()), packed, ones, zeros, None, torch.float32, "none")

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.no_grad():
        return best(onednn), best(lambda: int8_matmul(x, w))


@functools.cache
def _onednn_fast() -> bool:
    """Whether oneDNN's int8 kernel is no more than :data:`ONEDNN_SLOWER_LIMIT` times slower than the int_mm path
    on this CPU, measured once per process: eight products of 4 M multiply-adds, 0.2 s on the CPU where oneDNN was
    slow, far less where it is fast."""
    onednn, int_mm = _probe_seconds()
    return onednn <= ONEDNN_SLOWER_LIMIT * int_mm


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 quantisation of each row: (M, K) float -> (M, K) int8 and (M, 1) float32 scales,
    with x ~= q * scale. Computed in float32 (bf16 cannot hold x / scale to the integer)."""
    x = x.float()
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / INT8_MAX
    return torch.round(x / scale).to(torch.int8), scale


def quantize_tensor(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 quantisation with one scale: x -> (int8 of x's shape, 0-dim float32 scale)."""
    lo, hi = torch.aminmax(x)
    scale = torch.maximum(-lo, hi).float().clamp_min(1e-12) / INT8_MAX
    y = x / scale if x.dtype == torch.float32 else x.float().div_(scale)  # never x itself, in place
    return y.round_().to(torch.int8), scale


class Int8Linear(nn.Module):
    """``nn.Linear`` (optionally followed by GELU) with an int8 weight and int8 activations quantised at run time.

    The output has the input's dtype (float32 or bfloat16). The weight scales and the bias stay float32 whatever
    the module is cast to: a bf16 scale alone would add up to 0.4 % error to every output channel.

    Args:
        activation: "none", or "gelu" (exact, erf) applied to the output, fused into the matmul with oneDNN.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "none") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {ACTIVATIONS}")
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.kernel = "onednn" if _onednn_available() else "int_mm"
        self._packed: tuple[Tensor, Tensor] | None = None  # oneDNN's layout of the weight, made at first use

    @classmethod
    def from_linear(cls, linear: nn.Linear, activation: str = "none") -> Int8Linear:
        """Quantise a float linear layer (its weight read in float32)."""
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, activation)
        q = q.to(linear.weight.device)
        w, scale = quantize_rows(linear.weight.detach())
        q.weight.copy_(w)
        q.weight_scale.copy_(scale[:, 0])
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach().float())
        return q

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        # Module.to(dtype) casts floating buffers; keep the scales and bias float32 (see the class docstring).
        self.weight_scale = self.weight_scale.float()
        if self.bias is not None:
            self.bias = self.bias.float()
        self._packed = None
        return self

    def __getstate__(self) -> dict:
        # oneDNN's packed weight is an opaque tensor that cannot be copied or pickled; it is made again at use.
        return {**self.__dict__, "_packed": None}

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel == "onednn" and x.device.type == "cpu":
            return self._forward_onednn(x)
        return self._forward_int_mm(x)

    def _forward_onednn(self, x: Tensor) -> Tensor:
        """One scale per sample (entry of the first dim) of a 3-D or larger x, one for all of a 2-D x."""
        if self._packed is None:
            packed = torch.ops.onednn.qlinear_prepack(self.weight, None)
            self._packed = packed, torch.zeros(self.out_features, dtype=torch.long, device=x.device)
        packed, zero_points = self._packed
        out = []
        for sample in x if x.ndim > 2 else [x]:
            q, scale = quantize_tensor(sample)
            out.append(_qlinear(q, scale, packed, self.weight_scale, zero_points, self.bias, x.dtype, self.activation))
        return torch.stack(out) if x.ndim > 2 else out[0]

    def _forward_int_mm(self, x: Tensor) -> Tensor:
        shape = x.shape
        q, scale = quantize_rows(x.reshape(-1, shape[-1]))  # M K
        acc = int8_matmul(q, self.weight)  # M N int32, exact
        out = acc.float().mul_(scale * self.weight_scale)
        if self.bias is not None:
            out = out.add_(self.bias)
        if self.activation == "gelu":
            out = F.gelu(out)
        return out.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"activation={self.activation}, kernel={self.kernel}"
        )


def quantize_linears_(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by an :class:`Int8Linear`, in place; returns ``model``.

    An MLP's GELU moves into its first layer (fused into the matmul). Quantise a float32 model, then cast it to
    the activation dtype (the int8 layers keep their own dtypes).
    """
    for name, child in list(model.named_children()):
        if isinstance(child, Mlp) and isinstance(child.act, nn.GELU) and child.act.approximate == "none":
            child.fc1 = Int8Linear.from_linear(child.fc1, activation="gelu")
            child.act = nn.Identity()
            child.fc2 = Int8Linear.from_linear(child.fc2)
        elif isinstance(child, nn.Linear):
            setattr(model, name, Int8Linear.from_linear(child))
        else:
            quantize_linears_(child)
    return model


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds int8 linear layers (:func:`quantize_linears_` ran on it)."""
    return any(isinstance(m, Int8Linear) for m in model.modules())
