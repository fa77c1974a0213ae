"""The trainer: loss, parameter groups, schedule, config, overfitting, init_from, CLI, bf16, checkpointing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from conftest import randomize_
from seggpt.checkpoint import load_model, save_native
from seggpt.config import vit_tiny
from seggpt.modeling import SegGPT
from seggpt.train import load_config, per_sample_loss, train
from seggpt.train.metrics import read_metrics
from seggpt.train.optim import WarmupCosine, _matches, layer_id, param_groups

ROOT = Path(__file__).resolve().parents[1]


def tiny_overrides(run_dir: Path, **extra) -> list[str]:
    base = {
        "run_dir": str(run_dir),
        "steps": 4,
        "batch_size": 4,
        "log_every": 2,
        "checkpoint_every": 2,
        "plot": False,
        "threads": 1,
        "data.sources.0": "{type: toy, weight: 1, num_images: 8}",
        "optim.lr": 1e-3,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def test_per_sample_loss_matches_the_model_loss_for_one_sample():
    model = SegGPT(vit_tiny())
    pred, target = torch.randn(2, 3, 64, 32), torch.randn(2, 3, 64, 32)
    mask = torch.rand(2, 32) < 0.5
    valid = (torch.rand(2, 1, 64, 32) < 0.9).float()
    ours = per_sample_loss(pred, target, mask, valid, 8)
    for b in range(2):
        ref = model.loss(pred[b : b + 1], target[b : b + 1], mask[b : b + 1], valid[b : b + 1])
        torch.testing.assert_close(ours[b], ref)


def test_loss_beta_is_the_smooth_l1_beta():
    pred, target = torch.zeros(1, 3, 64, 32), torch.zeros(1, 3, 64, 32)
    target[:, :, 32:] = 0.5  # every query pixel off by 0.5
    mask = torch.zeros(1, 32, dtype=torch.bool)
    mask[:, 16:] = True  # the query half
    # beta 1: quadratic below 1, 0.5 * 0.5**2 / 1; beta 0.01: linear, 0.5 - 0.005.
    assert per_sample_loss(pred, target, mask, None, 8, beta=1.0).item() == pytest.approx(0.125, rel=1e-4)
    assert per_sample_loss(pred, target, mask, None, 8).item() == pytest.approx(0.495, rel=1e-4)
    with pytest.raises(ValueError, match="loss_beta"):
        load_config(None, ["loss_beta=0"])


def test_layer_decay_groups_and_schedule():
    model = SegGPT(vit_tiny())
    depth = model.config.depth
    assert layer_id("patch_embed.proj.weight", depth) == 0
    assert layer_id("pos_embed", depth) == 0 and layer_id("type_token_ins", depth) == 0
    assert layer_id("blocks.2.attn.qkv.weight", depth) == 3
    assert layer_id("module.blocks.0.norm1.bias", depth) == 1
    assert layer_id("decoder_pred.0.weight", depth) == depth + 1 and layer_id("norm.weight", depth) == depth + 1
    groups = param_groups(model, 0.05, 0.5, depth)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    for g in groups:
        assert g["lr_scale"] == pytest.approx(0.5 ** (depth + 1 - g["layer"]))
        for name, p in zip(g["names"], g["params"], strict=True):
            no_decay = p.ndim == 1 or "token" in name or name == "pos_embed"
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), name
    s = WarmupCosine(1.0, total=110, warmup=10, min_lr=0.1)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert s(110) == pytest.approx(0.1)


def test_lr_scales_multiply_the_layer_decay_by_prefix():
    model = SegGPT(vit_tiny())
    depth = model.config.depth
    scales = {"patch_embed": 10.0, "patch_embed.proj.bias": 3.0, "blocks.1": 0.5}
    groups = param_groups(model, 0.05, 0.5, depth, scales)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    seen = {}
    for g in groups:
        for name in g["names"]:
            seen[name] = g["lr_scale"] / 0.5 ** (depth + 1 - g["layer"])
    assert seen["patch_embed.proj.weight"] == pytest.approx(10.0)
    assert seen["patch_embed.proj.bias"] == pytest.approx(3.0)  # the longer prefix wins
    assert seen["blocks.1.attn.qkv.weight"] == pytest.approx(0.5)
    assert seen["blocks.0.attn.qkv.weight"] == pytest.approx(1.0)
    # A prefix names whole dotted parts: "blocks.1" is not "blocks.10" (vit_tiny has 4 blocks, so check the rule).
    assert _matches("module.blocks.1.mlp.fc1.weight", "blocks.1")
    assert not _matches("blocks.10.mlp.fc1.weight", "blocks.1")
    assert seen["pos_embed"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="match no trainable parameter"):
        param_groups(model, 0.05, 1.0, depth, {"patch_embd": 2.0})
    with pytest.raises(ValueError, match="must be > 0"):
        param_groups(model, 0.05, 1.0, depth, {"patch_embed": 0.0})
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["optim.lr_scales={patch_embed.proj: 4}"])
    assert cfg.optim.lr_scales == {"patch_embed.proj": 4}


def test_config_yaml_overrides_and_errors(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["optim.lr=3e-4", "data.sources.1.weight=2.5", "steps=7"])
    assert cfg.optim.lr == 3e-4 and cfg.steps == 7 and cfg.data.sources[1]["weight"] == 2.5
    assert cfg.data.masking.half_prob == 0.5  # from the file
    paper = load_config(ROOT / "configs" / "paper_vit_large.yaml")
    weights = {s["type"]: s["weight"] for s in paper.data.sources}
    assert weights["coco_instance"] == 0.22 and weights["vessels"] == 0.06
    # The supplementary's weights sum to 0.99 as published; the mixture normalises them.
    assert sum(weights.values()) == pytest.approx(0.99)
    with pytest.raises(ValueError, match=r"unknown config keys \['optim.lrr'\]"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["steps"])
    with pytest.raises(ValueError, match="precision"):
        load_config(None, ["precision=fp8"])


def test_tiny_model_overfits_a_handful_of_pairs(tmp_path):
    cfg = load_config(
        None,
        tiny_overrides(
            tmp_path,
            steps=200,
            log_every=10,
            checkpoint_every=1000,
            **{
                "data.sources.0": "{type: toy, weight: 1, num_images: 4}",
                "data.num_samples": 4,
                "data.masking.half_prob": 1.0,
                "optim.lr": 1e-2,
                "optim.warmup_steps": 10,
                "optim.weight_decay": 0.0,
            },
        ),
    )
    train(cfg)
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert len(losses) == 20
    assert losses[-1] < losses[0] / 10, losses


def test_run_folder_cli_and_init_from(tmp_path):
    from seggpt.cli import main

    run = tmp_path / "run"
    code = main(
        ["train", str(ROOT / "configs" / "tiny.yaml"), *tiny_overrides(run, steps=2, plot=True), "--no-progress"]
    )
    assert code == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["steps"] == 2
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [2]
    assert (run / "metrics.png").stat().st_size > 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002.pt"]
    trained = load_model(run / "model.safetensors")
    assert trained.config == vit_tiny()
    # A training checkpoint holds only tensors and plain values: it loads without running pickled code, and
    # load_model reads its model, config included, so a run can be evaluated mid-way.
    step_file = run / "checkpoints" / "step_0000002.pt"
    assert torch.load(step_file, map_location="cpu", weights_only=True)["step"] == 2
    mid = load_model(step_file)
    assert mid.config == trained.config
    for k, v in trained.state_dict().items():
        assert torch.equal(mid.state_dict()[k], v), k
    # Fine-tuning starts from the checkpoint: with lr 0 the parameters do not move at all.
    start = SegGPT(vit_tiny())
    save_native(start, tmp_path / "start.safetensors")
    cfg = load_config(
        None,
        tiny_overrides(tmp_path / "ft", steps=2, **{"model.preset": None, "optim.lr": 0.0})
        + [f"model.init_from={tmp_path / 'start.safetensors'}"],
    )
    result = train(cfg)
    for k, v in start.state_dict().items():
        assert torch.equal(result.model.state_dict()[k], v), k
    # scale_resolution: 2 trains at twice the checkpoint's resolution, from its weights spread over bigger patches.
    cfg = load_config(
        None,
        tiny_overrides(tmp_path / "hires", steps=1, **{"model.preset": None, "model.scale_resolution": 2})
        + [f"model.init_from={tmp_path / 'start.safetensors'}"],
    )
    hires = train(cfg).model
    assert hires.config.img_size == tuple(2 * s for s in vit_tiny().img_size)
    assert hires.config.patch_size == 2 * vit_tiny().patch_size
    # Another image size with the same patches: a finer token grid, the relative tables resized to it.
    cfg = load_config(
        None,
        tiny_overrides(tmp_path / "grid", steps=1, **{"model.preset": None, "model.overrides": "{img_size: [96, 48]}"})
        + [f"model.init_from={tmp_path / 'start.safetensors'}"],
    )
    grid = train(cfg).model
    assert grid.config.img_size == (96, 48) and grid.config.grid_size == (12, 6)
    assert grid.blocks[0].attn.rel_pos_h.shape[0] == 2 * 12 - 1
    # Bad config: one clear line and exit 2.
    assert main(["train", str(ROOT / "configs" / "tiny.yaml"), "optim.nope=1"]) == 2


def test_overrides_may_follow_options(capsys):
    """`seggpt train CONFIG --print-config steps=7`: argparse alone would refuse steps=7 after an option."""
    from seggpt.cli import main

    assert main(["train", str(ROOT / "configs" / "tiny.yaml"), "--print-config", "steps=7", "optim.lr=0.002"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["steps"] == 7 and printed["optim"]["lr"] == 0.002


def test_bf16_and_grad_checkpointing(tmp_path):
    fp32 = train(load_config(None, tiny_overrides(tmp_path / "a", steps=2)))
    ckpt = train(load_config(None, tiny_overrides(tmp_path / "b", steps=2, **{"model.grad_checkpointing": True})))
    for (k, v), w in zip(fp32.model.state_dict().items(), ckpt.model.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, rtol=1e-5, atol=1e-6, msg=k)
    bf16 = train(load_config(None, tiny_overrides(tmp_path / "c", steps=2, precision="bf16")))
    assert math.isfinite(bf16.last_loss) and bf16.model.patch_embed.proj.weight.dtype == torch.float32
    assert abs(bf16.last_loss - fp32.last_loss) < 0.1 * fp32.last_loss


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_that_emulates_it_warns(tmp_path, monkeypatch, caplog, native):
    import seggpt.train.trainer as trainer

    monkeypatch.setattr(trainer, "cpu_has_bf16", lambda: native)
    with caplog.at_level("WARNING", logger="seggpt.train.trainer"):
        train(load_config(None, tiny_overrides(tmp_path / "a", steps=1, precision="bf16")))
    warned = [r.message for r in caplog.records if "emulated" in r.getMessage()]
    assert len(warned) == (0 if native else 1)


def test_stop_and_resume_in_process_is_exact(tmp_path):
    over = {"model.overrides": "{drop_path_rate: 0.2}", "data.masking.half_prob": 0.5, "steps": 6}
    ref = train(load_config(None, tiny_overrides(tmp_path / "ref", **over)))
    cfg = load_config(None, tiny_overrides(tmp_path / "cut", **over))
    part = train(cfg, stop_after=3)
    assert part.model_path is None and part.step == 3
    assert (tmp_path / "cut" / "checkpoints" / "step_0000003.pt").exists()
    done = train(cfg)
    assert done.step == 6
    for (k, v), w in zip(ref.model.state_dict().items(), done.model.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    # The metrics log of the resumed run has each step once.
    assert [r["step"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")] == [2, 4, 6]


def test_cli_stop_after_makes_a_stage_the_next_config_starts_from(tmp_path):
    # A recipe's stage that stops part-way through its schedule, and a next stage whose init_from is that
    # stage's checkpoint (a training checkpoint loads as a model).
    from seggpt.cli import main

    run = tmp_path / "first"
    args = ["train", str(ROOT / "configs" / "tiny.yaml"), *tiny_overrides(run, steps=6), "--no-progress"]
    assert main([*args, "--stop-after", "2"]) == 0
    step2 = run / "checkpoints" / "step_0000002.pt"
    assert step2.exists() and not (run / "model.safetensors").exists()
    # Run again: the stage is done, nothing is trained or rewritten.
    before = step2.stat().st_mtime_ns
    assert main([*args, "--stop-after", "2"]) == 0
    assert step2.stat().st_mtime_ns == before
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002.pt"]
    nxt = load_config(
        None,
        tiny_overrides(tmp_path / "next", steps=1, **{"model.preset": None, "optim.lr": 0.0})
        + [f"model.init_from={step2}"],
    )
    started = train(nxt).model
    for k, v in load_model(step2).state_dict().items():
        assert torch.equal(started.state_dict()[k], v), k
    assert main([*args, "--stop-after", "7"]) == 2  # past the schedule: one clear line, exit 2


class _BadEveryOther:
    """A source whose odd draws hit a corrupt file."""

    name = "flaky"

    def __init__(self) -> None:
        from seggpt.data.toy import toy_source

        self.inner = toy_source(num_images=4)

    def __len__(self) -> int:
        return 4

    def sample_pair(self, rng, size):
        from seggpt.data.base import DataError

        if rng.random() < 0.5:
            raise DataError("cannot read mask /data/flaky/0007.png: truncated file")
        return self.inner.sample_pair(rng, size)


def test_bad_samples_are_counted_or_stop_the_run(tmp_path):
    from seggpt.data.base import DataError

    ok = train(load_config(None, tiny_overrides(tmp_path / "a", steps=2)), sources=[_BadEveryOther()])
    assert ok.skipped > 0
    with pytest.raises(DataError, match=r"0007\.png"):
        train(load_config(None, tiny_overrides(tmp_path / "b", steps=2, **{"data.skip_bad_samples": False})),
              sources=[_BadEveryOther()])  # fmt: skip
    with pytest.raises(DataError, match="max_skipped=0"):
        train(load_config(None, tiny_overrides(tmp_path / "c", steps=2, **{"data.max_skipped": 0})),
              sources=[_BadEveryOther()])  # fmt: skip


class _Interrupting:
    """The toy source, which sends this process SIGINT (Ctrl-C) at the given draws, as a user would mid-step."""

    name = "toy"

    def __init__(self, at: tuple[int, ...]) -> None:
        from seggpt.data.toy import toy_source

        self.inner, self.at, self.draws = toy_source(num_images=8), set(at), 0

    def __len__(self) -> int:
        return len(self.inner)

    def sample_pair(self, rng, size):
        import os
        import signal

        self.draws += 1
        if self.draws in self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.inner.sample_pair(rng, size)


def test_ctrl_c_finishes_the_step_with_a_checkpoint_and_resumes_exactly(tmp_path, foreground_sigint):
    import signal

    over = {"steps": 6, "checkpoint_every": 6, "data.masking.half_prob": 0.5}
    ref = train(load_config(None, tiny_overrides(tmp_path / "ref", **over)), sources=[_Interrupting(())])
    cfg = load_config(None, tiny_overrides(tmp_path / "cut", **over))
    # Ctrl-C while the third step draws its batch (draws 9-12 with 4 pairs a step): that step still completes.
    cut = train(cfg, sources=[_Interrupting((10,))])
    assert cut.interrupted and cut.model_path is None and cut.step == 3
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step_0000003.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    done = train(cfg, sources=[_Interrupting(())])
    assert done.step == 6 and not done.interrupted and done.model_path.exists()
    for (k, v), w in zip(ref.model.state_dict().items(), done.model.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    # A second Ctrl-C stops at once, without a checkpoint for the step it was on.
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, tiny_overrides(tmp_path / "twice", **over)), sources=[_Interrupting((2, 3))])
    assert not (tmp_path / "twice" / "checkpoints").exists() or not any((tmp_path / "twice" / "checkpoints").iterdir())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_time_limit_stops_with_a_checkpoint_but_never_drops_a_finished_run(tmp_path):
    over = tiny_overrides(tmp_path / "t", steps=4, checkpoint_every=4)
    part = train(load_config(None, over), time_limit=0.0)
    assert part.step == 1 and part.model_path is None and not part.interrupted
    assert (tmp_path / "t" / "checkpoints" / "step_0000001.pt").exists()
    # Out of time on the last step: the run is complete, so its model is written (it used to be left out).
    last = train(load_config(None, tiny_overrides(tmp_path / "one", steps=1)), time_limit=0.0)
    assert last.step == 1 and last.model_path is not None and last.model_path.exists()


def test_cli_exits_130_when_interrupted(tmp_path, monkeypatch, capsys):
    import seggpt.train
    from seggpt.cli import main

    real = seggpt.train.train
    monkeypatch.setattr(seggpt.train, "train", lambda cfg, **kw: real(cfg, sources=[_Interrupting((5,))], **kw))
    run = tmp_path / "run"
    args = ["train", str(ROOT / "configs" / "tiny.yaml"), *tiny_overrides(run, steps=6), "--no-progress"]
    assert main(args) == 130
    assert f"stopped at step 2 with a checkpoint in {run}; run again to resume" in capsys.readouterr().out
    assert (run / "checkpoints" / "step_0000002.pt").exists() and not (run / "model.safetensors").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_parses_and_builds_its_sources(path):
    from seggpt.train.trainer import build_sources

    cfg = load_config(path)
    assert cfg.steps > 0 and cfg.batch_size > 0
    assert cfg.model.preset is not None or cfg.model.init_from is not None
    if all(s.get("type") in ("synth", "real_pairs", "toy") for s in cfg.data.sources):
        sources, weights = build_sources(cfg)  # the paper's mixture needs datasets on disk
        assert len(sources) == len(weights) > 0


def test_branch_init_loads_a_pretrained_branch_and_refuses_one_that_does_not_fit(tmp_path):
    import json

    from safetensors.torch import save_file

    from seggpt.train.trainer import BRANCH_FORMAT, load_branch

    # A branch's stages as pretraining writes them (projects/synthcontext/scripts/pretrain_branch.py).
    out = tmp_path / "branch.safetensors"
    stages = randomize_(SegGPT(vit_tiny(branch_channels=(4, 8, 8)))).patch_embed.branch.stages
    saved = {k: v.contiguous() for k, v in stages.state_dict().items()}
    save_file(saved, out, metadata={"format": BRANCH_FORMAT, "channels": json.dumps([4, 8, 8]), "depth": "2"})
    # A checkpoint without a branch, fine-tuned with one: the branch's stages come from the file, its output conv
    # starts at zero, everything else from the checkpoint.
    start = randomize_(SegGPT(vit_tiny()))
    save_native(start, tmp_path / "start.safetensors")
    over = {"model.preset": None, "optim.lr": 0.0, "model.overrides": "{branch_channels: [4, 8, 8]}"}
    run = load_config(
        None,
        tiny_overrides(tmp_path / "ft", steps=1, **over)
        + [f"model.init_from={tmp_path / 'start.safetensors'}", f"model.branch_init={out}"],
    )
    model = train(run).model
    for k, v in saved.items():
        assert torch.equal(model.patch_embed.branch.stages.state_dict()[k], v), k
    assert not model.patch_embed.branch.out.weight.any()
    for k, v in start.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    # A branch of another shape, or no branch at all, is refused with what to change.
    other = SegGPT(vit_tiny(branch_channels=(4, 8, 16)))
    with pytest.raises(ValueError, match=r"channels \(4, 8, 8\), depth 2; the model's is \(4, 8, 16\)"):
        load_branch(other, out)
    with pytest.raises(ValueError, match="not a conv-branch file"):
        load_branch(other, tmp_path / "start.safetensors")
    no_branch = load_config(
        None,
        tiny_overrides(tmp_path / "nb", steps=1, **{"model.preset": None})
        + [f"model.init_from={tmp_path / 'start.safetensors'}", f"model.branch_init={out}"],
    )
    with pytest.raises(ValueError, match="no conv branch"):
        train(no_branch)


def test_an_extra_loss_that_is_not_registered_is_named_with_what_to_do(tmp_path):
    cfg = load_config(None, tiny_overrides(tmp_path / "r", **{"extra_loss.name": "nowhere"}))
    with pytest.raises(ValueError, match=r"'nowhere' is not registered .*register_extra_loss"):
        train(cfg)
    with pytest.raises(ValueError, match="extra_loss.weight must be >= 0"):
        load_config(None, ["extra_loss.weight=-1"])
    with pytest.raises(ValueError, match="extra_loss is not supported with distributed=fsdp"):
        load_config(None, ["extra_loss.name=x", "distributed=fsdp"])


def test_init_from_another_architecture_names_the_tensors_and_init_partial_loads_what_fits(tmp_path, capsys):
    from seggpt.cli import main

    start = SegGPT(vit_tiny())
    save_native(start, tmp_path / "start.safetensors")
    wider = ["model.preset=vit_tiny", "model.overrides={embed_dim: 48, num_heads: 2}"]
    argv = ["train", str(ROOT / "configs" / "tiny.yaml"), *tiny_overrides(tmp_path / "w", steps=1), *wider]
    argv += [f"model.init_from={tmp_path / 'start.safetensors'}", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "tensor(s) of another shape" in err and "blocks.0.attn.qkv.weight (96, 32) vs (144, 48)" in err
    assert "model.init_partial=true" in err
    # With init_partial the tensors that fit are the checkpoint's, the others start from scratch.
    deeper = ["model.preset=vit_tiny", "model.overrides={depth: 5, out_indices: [1, 2, 4]}"]
    cfg = load_config(
        None,
        tiny_overrides(tmp_path / "d", steps=1, **{"optim.lr": 0.0})
        + deeper
        + [f"model.init_from={tmp_path / 'start.safetensors'}", "model.init_partial=true"],
    )
    model = train(cfg).model
    assert torch.equal(model.state_dict()["blocks.3.mlp.fc1.weight"], start.state_dict()["blocks.3.mlp.fc1.weight"])
    assert "blocks.4.mlp.fc1.weight" not in start.state_dict()
