"""Devices and precisions by name, one spelling for every command and for the Python API.

``auto`` is the first of cuda, mps and cpu that this machine has. A device it does not have, or a misspelt one, is
a :class:`ValueError` whose one line names the devices it has (instead of torch's AssertionError from deep inside
the first ``.to("cuda")`` on a machine without CUDA). Precisions are ``fp32``, ``bf16``, ``fp16``, with the long
names ``float32``, ``bfloat16``, ``float16`` as aliases, and ``int8``: the linear layers dynamically quantised to
int8 (:mod:`seggpt.modeling.quant`), the rest in :func:`int8_compute_dtype`; CPU only.
"""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8": torch.int8,  # int8 linear layers (dynamic quantisation), the rest in int8_compute_dtype()
}
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_NAMES = "fp32, bf16, fp16 or int8"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """The devices this machine has, in the order ``auto`` tries them: cuda:0 ..., mps, cpu."""
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return found + (["mps"] if _mps_available() else []) + ["cpu"]


def _has(device: torch.device) -> bool:
    if device.type == "cpu":
        return True
    if device.type == "mps":
        return _mps_available()
    # cuda, and backends that follow its module layout (torch.xpu, ...); meta and the like are no place to run.
    backend = getattr(torch, device.type, None)
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        return False
    return device.index is None or device.index < backend.device_count()


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch device for a name: ``auto`` (or None) picks cuda, then mps, then cpu; others are checked.

    Raises:
        ValueError: the name is no device, or this machine does not have it; the message lists what it has.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    here = available_devices()
    has = f"this machine has {', '.join(here)}" + (" (auto picks the first)" if len(here) > 1 else "")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {str(device)!r}; {has}") from None
    if not _has(dev):
        why = ""
        if dev.type == "cuda" and torch.version.cuda is None and not torch.cuda.is_available():
            why = f" (this PyTorch, {torch.__version__}, is built without CUDA)"
        raise ValueError(f"device {str(device)!r} is not available{why}; {has}")
    return dev


def parse_dtype(dtype: str | torch.dtype, device: str | torch.device | None = None) -> torch.dtype:
    """``fp32`` / ``bf16`` / ``fp16`` / ``int8`` (or ``float32`` / ``bfloat16`` / ``float16``), or a floating torch
    dtype, or ``torch.int8``. ``int8`` means int8 linear layers (see the module docstring).

    Args:
        device: where the model will run; given, a precision that it cannot run is refused (int8 on a GPU).

    Raises:
        ValueError: any other name, a dtype that is neither floating point nor int8, or one the device cannot run.
    """
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point and dtype is not torch.int8:
            raise ValueError(f"dtype {dtype} is not floating point; use {_NAMES}")
    else:
        name = DTYPE_ALIASES.get(dtype, dtype)
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use {_NAMES} (or float32, bfloat16, float16)")
        dtype = DTYPES[name]
    if dtype is torch.int8 and device is not None and torch.device(device).type != "cpu":
        raise ValueError(
            f"dtype int8 (dynamic int8 quantisation) runs on the CPU only, not on {str(device)!r}; "
            "pass device cpu, or use bf16 or fp16 there"
        )
    return dtype


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX; torch.cpu's own cpuinfo checks). Without
    them oneDNN emulates it: no faster than float32 for inference, ten times slower for training here."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def int8_compute_dtype() -> torch.dtype:
    """The precision of everything but the linear layers in an int8 model: bfloat16 where the CPU computes it
    natively (:func:`cpu_has_bf16`), else float32."""
    return torch.bfloat16 if cpu_has_bf16() else torch.float32
