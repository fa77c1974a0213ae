"""Multi-process training under torchrun (gloo on the CPU), and killing a run then resuming it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import project_module
from seggpt.data.toy import toy_source
from seggpt.train import load_config, train

ROOT = Path(__file__).resolve().parents[1]
PROJECT_SCRIPTS = ROOT / "projects" / "synthcontext" / "scripts"

DDP_SCRIPT = """
import os, sys, torch
import attributes  # projects/synthcontext/scripts/attributes.py (on PYTHONPATH): extra_loss.name=attributes
from seggpt.train import load_config, train
attributes.register()
cfg = load_config(None, sys.argv[1:])
result = train(cfg)
torch.save(result.model.state_dict(), os.path.join(cfg.run_dir, f"rank{os.environ['RANK']}.pt"))
"""

SLOW_SCRIPT = """
import sys, time
from seggpt.data.toy import toy_source
from seggpt.train import load_config, train

class Slow:  # the same pairs, slower, so the test can kill the run between two checkpoints
    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
    def __len__(self):
        return len(self.inner)
    def sample_pair(self, rng, size):
        time.sleep(0.03)
        return self.inner.sample_pair(rng, size)

train(load_config(None, sys.argv[1:]), sources=[Slow(toy_source(num_images=8))])
"""


def overrides(run_dir: Path, **extra) -> list[str]:
    base = {
        "run_dir": str(run_dir),
        "batch_size": 4,
        "log_every": 1,
        "plot": False,
        "threads": 1,
        "seed": 3,
        "data.sources.0": "{type: toy, weight: 1, num_images: 8}",
        "data.masking.half_prob": 0.5,
        "optim.lr": 1e-3,
        "optim.warmup_steps": 1,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def env() -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1")
    paths = [str(ROOT / "src"), e.get("PYTHONPATH", ""), str(PROJECT_SCRIPTS)]
    e["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return e


@pytest.mark.parametrize("extra_loss", [None, "attributes"], ids=["plain", "attribute-loss"])
def test_torchrun_two_processes_match_one_process(tmp_path, extra_loss):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    project_module("attributes").register()
    extra = {"steps": 3, "checkpoint_every": 3, "extra_loss.name": extra_loss, "extra_loss.weight": 0.5,
             "extra_loss.batch_size": 2}  # fmt: skip
    args = overrides(tmp_path / "ddp", **extra)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), *args]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = train(load_config(None, overrides(tmp_path / "one", **extra))).model.state_dict()
    for k, v in single.items():
        assert torch.equal(ranks[0][k], ranks[1][k]), f"ranks differ at {k}"
        # Same global batch: the same samples and the same averaged gradient, up to summation order.
        torch.testing.assert_close(ranks[0][k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert (tmp_path / "ddp" / "model.safetensors").exists()


def test_kill_mid_run_then_resume_lands_on_the_same_parameters(tmp_path):
    over = {"steps": 16, "checkpoint_every": 4, "model.overrides": "{drop_path_rate: 0.2}"}
    ref = train(load_config(None, overrides(tmp_path / "ref", **over)), sources=[toy_source(num_images=8)])

    run = tmp_path / "killed"
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), *overrides(run, **over)], env=env(), stderr=subprocess.PIPE, text=True
    )
    target = run / "checkpoints" / "step_0000008.pt"
    deadline = time.time() + 240
    while not target.exists():
        assert proc.poll() is None, f"training died before the kill: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not (run / "model.safetensors").exists(), "the run finished before it could be killed"

    resumed = train(load_config(None, overrides(run, **over)), sources=[toy_source(num_images=8)])
    assert resumed.step == 16
    for (k, v), w in zip(ref.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


@pytest.mark.slow
def test_torchrun_fsdp_matches_one_process(tmp_path):
    """FSDP (fully_shard, gloo on the CPU) with gradient accumulation gives the single-process parameters."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    common = {"steps": 3, "checkpoint_every": 3, "grad_accum": 2}
    args = overrides(tmp_path / "fsdp", distributed="fsdp", **common)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), *args]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors.torch import load_file

    sharded_run = load_file(tmp_path / "fsdp" / "model.safetensors")
    single = train(load_config(None, overrides(tmp_path / "one", **common))).model.state_dict()
    for k, v in single.items():
        got = sharded_run[k]
        if k.endswith("attn.qkv.bias"):
            # The key bias gets no gradient in exact arithmetic (softmax ignores a shift shared by all keys), so
            # its gradient is rounding noise that Adam scales up to lr-sized steps in either direction; it cannot
            # affect any output. Compare the query and value biases only.
            c = v.shape[0] // 3
            got, v = torch.cat([got[:c], got[2 * c :]]), torch.cat([v[:c], v[2 * c :]])
        torch.testing.assert_close(got, v, rtol=1e-4, atol=1e-5, msg=k)
