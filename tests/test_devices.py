"""Device and dtype names: ``auto`` (cuda, then mps, then cpu), one-line errors naming what the machine has, the
same ``--device`` / ``--dtype`` spellings and defaults in every command and in the Python API."""

from __future__ import annotations

import inspect

import pytest
import torch

from seggpt.cli import build_parser, main
from seggpt.devices import parse_dtype, resolve_device


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine has ``cuda`` CUDA devices and ``mps`` or not, whatever it really has."""

    def set_(cuda: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    set_()
    return set_


@pytest.mark.parametrize(
    "cuda, mps, expected", [(2, True, "cuda"), (1, False, "cuda"), (0, True, "mps"), (0, False, "cpu")]
)
def test_auto_is_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda, mps)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device(None) == torch.device(expected)


def test_named_devices_are_checked(machine):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    machine(cuda=2, mps=True)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("mps") == torch.device("mps")
    with pytest.raises(
        ValueError, match=r"^device 'cuda:2' is not available; this machine has cuda:0, cuda:1, mps, cpu"
    ):
        resolve_device("cuda:2")
    machine(cuda=0, mps=False)
    for name in ("cuda", "mps", "meta"):
        with pytest.raises(ValueError, match=rf"^device '{name}' is not available.*; this machine has cpu$"):
            resolve_device(name)
    with pytest.raises(ValueError, match=r"^unknown device 'gpu'; this machine has cpu$"):
        resolve_device("gpu")


@pytest.mark.skipif(torch.version.cuda is not None, reason="the message for a PyTorch built without CUDA")
def test_cuda_on_a_cpu_build_says_so():
    with pytest.raises(ValueError, match=r"is not available \(this PyTorch, .*, is built without CUDA\)"):
        resolve_device("cuda")


def test_dtype_spellings():
    for names, dtype in ((("fp32", "float32"), torch.float32), (("bf16", "bfloat16"), torch.bfloat16),
                         (("fp16", "float16"), torch.float16)):  # fmt: skip
        for name in names:
            assert parse_dtype(name) is dtype
        assert parse_dtype(dtype) is dtype
    assert parse_dtype(torch.float64) is torch.float64  # the Python API takes any floating torch dtype
    assert parse_dtype("int8") is parse_dtype(torch.int8) is torch.int8  # int8 linear layers (test_fast_inference)
    with pytest.raises(ValueError, match=r"^unknown dtype 'fp64'; use fp32, bf16, fp16 or int8"):
        parse_dtype("fp64")
    with pytest.raises(ValueError, match="not floating point"):
        parse_dtype(torch.int64)


# The required arguments of each command that loads a model, so that it gets as far as running.
COMMANDS = {
    "segment": ["segment", "--prompt", "a.jpg", "a.png", "--out", "o", "t.jpg"],
    "video": ["video", "--frames", "f", "--first-mask", "m.png", "--out", "o"],
    "tune": ["tune", "--data", "d", "--out", "p.safetensors"],
    "eval": ["eval", "synthcontext", "--json", "r.json"],
    "app": ["app"],
    "demo": ["demo"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_defaults_to_auto_and_fp32(command):
    args = build_parser().parse_args(COMMANDS[command])
    assert args.device == "auto"
    if command != "tune":  # tune keeps the model in fp32 for the prompt's gradients (--amp for bf16)
        assert args.dtype == "fp32"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_a_device_in_one_line(command, machine, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written; if it were, it would land here
    assert main([*COMMANDS[command], "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"seggpt {command}: error: device 'cuda' is not available") and "this machine has cpu" in err
    assert main([*COMMANDS[command], "--device", "gpu"]) == 2
    assert capsys.readouterr().err == f"seggpt {command}: error: unknown device 'gpu'; this machine has cpu\n"
    if command != "tune":
        assert main([*COMMANDS[command], "--dtype", "fp64"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"seggpt {command}: error: unknown dtype 'fp64'") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_the_python_api_defaults_to_auto():
    from seggpt import SegGPTPredictor, SegGPTVideoPredictor, load_model
    from seggpt.app.server import Segmenter, create_app

    for f in (load_model, SegGPTPredictor, SegGPTVideoPredictor, Segmenter, create_app):
        assert inspect.signature(f).parameters["device"].default == "auto", f


def test_the_predictor_takes_names(machine, weights):
    from seggpt import SegGPTPredictor

    p = SegGPTPredictor(weights, dtype="bf16")
    assert p.device == torch.device("cpu") and p.dtype is torch.bfloat16
    with pytest.raises(ValueError, match="unknown device 'cuda0'"):
        SegGPTPredictor(weights, device="cuda0")


def test_train_refuses_a_device_in_one_line(machine, capsys, tmp_path):
    """train takes its device from the config (auto: cuda, else cpu); a named one is checked the same way."""
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    for device, line in (("cuda", "device 'cuda' is not available"), ("gpu", "unknown device 'gpu'")):
        assert main(["train", str(config), f"device={device}", f"run_dir={tmp_path / 'run'}", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"seggpt train: error: {line}") and err.endswith("this machine has cpu\n"), err
    assert not (tmp_path / "run").exists()
