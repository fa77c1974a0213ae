"""Shared test set-up: deterministic, CPU, two threads (the machine this project is built on)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def foreground_sigint():
    """SIGINT as an interactive Python process has it (a KeyboardInterrupt), whatever the runner inherited: a job
    started in the background by a shell ignores SIGINT, and the Ctrl-C tests check that it is put back."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def load_script(name: str, folder: str = "benchmarks"):
    """A script of benchmarks/, scripts/ or a project's scripts/ as a module (no such folder is a package), to test
    its functions."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def project_module(name: str, folder: str = "projects/synthcontext/scripts"):
    """A module of a project's scripts/ imported by name, with that folder on sys.path as when one of its scripts
    runs: the scripts import each other as siblings, and spawned workers import them by name."""
    import importlib
    import sys
    from pathlib import Path

    path = str(Path(__file__).resolve().parents[1] / folder)
    if path not in sys.path:
        sys.path.append(path)  # after everything else: a project module never hides an installed one
    return importlib.import_module(name)


def hf_config_for(cfg, **extra):
    """The transformers SegGptConfig with the same architecture as a SegGPTConfig (test-only dependency)."""
    from transformers import SegGptConfig

    return SegGptConfig(
        hidden_size=cfg.embed_dim,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        image_size=list(cfg.img_size),
        patch_size=cfg.patch_size,
        mlp_dim=int(cfg.embed_dim * cfg.mlp_ratio),
        pretrain_image_size=cfg.pretrain_img_size,
        decoder_hidden_size=cfg.decoder_embed_dim,
        merge_index=cfg.merge_index,
        intermediate_hidden_state_indices=list(cfg.out_indices),
        drop_path_rate=0.0,
        **extra,
    )


def randomize_(module: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter random values (zero-initialised tokens and tables would hide mistakes)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)
    return module


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny random model saved in the native format (seeded), for tests that pass ``--weights`` or a path."""
    from seggpt.checkpoint import save_native
    from seggpt.config import vit_tiny
    from seggpt.modeling import SegGPT

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_native(randomize_(SegGPT(vit_tiny()), std=0.1), path)
    return path
