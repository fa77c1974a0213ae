"""projects/synthcontext's training code: the attribute loss (scripts/attributes.py: its labels, its head, and
training with it through the trainer's extra-loss hook) and the conv branch pretrained on the same labels
(scripts/pretrain_branch.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.test_train import tiny_overrides

from conftest import project_module
from seggpt.config import vit_tiny
from seggpt.data import synth
from seggpt.data.masking import MaskingConfig
from seggpt.modeling import SegGPT
from seggpt.train import load_config, train
from seggpt.train.extra_loss import WithHead
from seggpt.train.metrics import read_metrics

attributes = project_module("attributes")  # projects/synthcontext/scripts/attributes.py
IGNORE, AttributeHead, attribute_maps = attributes.IGNORE, attributes.AttributeHead, attributes.attribute_maps
attribute_batch, attribute_loss = attributes.attribute_batch, attributes.attribute_loss
# The runs below name the loss in their config (extra_loss.name), as scripts/train.py lets a config do.
attributes.register()
ATTRIBUTES = {"extra_loss.name": "attributes", "extra_loss.weight": 0.5}


def _object(shape: str, texture: str, colour: str, cx: float, cy: float) -> synth.SceneObject:
    return synth.SceneObject(shape, texture, colour, (200.0, 30.0, 30.0), (90.0, 10.0, 10.0), cx, cy, 9.0,
                             0.3, 1.0, 0.0, 3.0, 1)  # fmt: skip


def test_attribute_maps_name_each_objects_training_values_and_ignore_the_rest():
    objs = (
        _object("star5", "stripes", "red", 14, 14),
        _object("heart", "rings", "blue", 48, 16),  # held out: never a training class
        _object("random:12345", "checker", "green", 30, 46),  # procedural: no class
    )
    scene = synth.Scene(np.zeros((64, 64, 3), np.float32), objs)
    _, inst = synth.render(scene)
    maps = attribute_maps(scene, inst)
    assert maps.shape == (3, 64, 64)
    assert (maps[:, inst == 0] == IGNORE).all()
    star = inst == 1
    assert star.any()
    assert (maps[0][star] == synth.TRAIN_SHAPES.index("star5")).all()
    assert (maps[1][star] == synth.TRAIN_TEXTURES.index("stripes")).all()
    assert (maps[2][star] == synth.COLOURS.index("red")).all()
    heart = inst == 2
    assert (maps[0][heart] == IGNORE).all() and (maps[1][heart] == IGNORE).all()
    assert (maps[2][heart] == synth.COLOURS.index("blue")).all()
    blob = inst == 3
    assert (maps[0][blob] == IGNORE).all()
    assert (maps[1][blob] == synth.TRAIN_TEXTURES.index("checker")).all()


def test_attribute_batch_is_a_pure_function_of_seed_and_step():
    masking = MaskingConfig(half_prob=0.5)
    a = attribute_batch(0, 7, 3, (64, 32), 8, masking)
    b = attribute_batch(0, 7, 3, (64, 32), 8, masking)
    c = attribute_batch(0, 8, 3, (64, 32), 8, masking)
    assert set(a) == {"images", "masks", "bool_masked_pos", "seg_type", "valid", "attributes"}
    assert a["images"].shape == (3, 3, 128, 32) and a["attributes"].shape == (3, 3, 128, 32)
    assert a["bool_masked_pos"].shape == (3, 16 * 4)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["images"], c["images"])
    # Only object pixels are labelled: every object has a colour class, and shape is known nowhere else.
    obj = a["attributes"][:, 2] != IGNORE
    assert obj.any() and (a["attributes"][:, 0][~obj] == IGNORE).all()
    assert (a["attributes"][:, 0][obj] != IGNORE).float().mean() > 0.3


def test_head_pixels_come_from_their_own_token():
    torch.manual_seed(0)
    head = AttributeHead(in_dim=8, patch_size=4)
    taps = [torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)]
    out = head(taps)
    assert {k: tuple(v.shape) for k, v in out.items()} == {a: (2, n, 12, 20) for a, n in head.sizes.items()}
    bumped = [t.clone() for t in taps]
    bumped[0][1, 2, 3] += 1.0
    changed = (head(bumped)["shape"] - out["shape"]).abs().sum(1) > 0  # (B, H, W)
    expect = torch.zeros_like(changed)
    expect[1, 8:12, 12:16] = True
    assert torch.equal(changed, expect)


def test_attribute_loss_is_split_invariant_and_ignores_unknown_pixels():
    torch.manual_seed(0)
    logits = {a: torch.randn(4, n, 6, 6) for a, n in AttributeHead(8, 2).sizes.items()}
    labels = torch.randint(0, 4, (4, 3, 6, 6))
    labels[0, :, :3] = IGNORE
    whole = attribute_loss(logits, labels)
    halves = (attribute_loss({a: v[:2] for a, v in logits.items()}, labels[:2])
              + attribute_loss({a: v[2:] for a, v in logits.items()}, labels[2:])) / 2  # fmt: skip
    torch.testing.assert_close(whole, halves)
    changed = {a: v.clone() for a, v in logits.items()}
    changed["shape"][0, :, :3] += torch.randn(changed["shape"].shape[1], 3, 6)
    torch.testing.assert_close(attribute_loss(changed, labels), whole)


def test_the_head_learns_attributes_through_the_model():
    torch.manual_seed(0)
    model = SegGPT(vit_tiny())
    cfg = model.config
    head = AttributeHead(cfg.embed_dim * len(cfg.out_indices), cfg.patch_size)
    both = WithHead(model, head)
    batch = attribute_batch(1, 0, 4, cfg.image_size, cfg.patch_size, MaskingConfig(half_prob=1.0))
    opt = torch.optim.Adam(both.parameters(), lr=3e-3)
    args = (batch["images"], batch["masks"], batch["bool_masked_pos"], batch["seg_type"], 4)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = attribute_loss(both(*args)[1], batch["attributes"])
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
    assert losses[-1] < 0.5 * losses[0], losses[::8]


def test_training_with_attributes_logs_it_saves_plain_seggpt_and_resumes_exactly(tmp_path):
    over = {"steps": 4, **ATTRIBUTES, "extra_loss.batch_size": 2, "data.masking.half_prob": 0.5}
    ref = train(load_config(None, tiny_overrides(tmp_path / "ref", **over)))
    rows = read_metrics(tmp_path / "ref" / "metrics.jsonl")
    assert all(np.isfinite(r["attributes_loss"]) and r["attributes_loss"] > 0 for r in rows)
    from safetensors.torch import load_file

    saved = load_file(ref.model_path)
    assert set(saved) == set(SegGPT(vit_tiny()).state_dict())  # the head is not part of the model
    cfg = load_config(None, tiny_overrides(tmp_path / "cut", **over))
    assert train(cfg, stop_after=2).step == 2
    done = train(cfg)
    for (k, v), w in zip(ref.model.state_dict().items(), done.model.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    # The attribute loss changes training: the same run without it ends elsewhere.
    plain = train(load_config(None, tiny_overrides(tmp_path / "plain", **{**over, "extra_loss.name": None})))
    assert any(not torch.equal(v, w) for v, w in zip(ref.model.state_dict().values(),
                                                     plain.model.state_dict().values(), strict=True))  # fmt: skip


def test_attribute_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="extra_loss.weight must be >= 0"):
        load_config(None, ["extra_loss.name=attributes", "extra_loss.weight=-1"])
    with pytest.raises(ValueError, match="not supported with distributed=fsdp"):
        load_config(None, ["extra_loss.name=attributes", "distributed=fsdp"])
    cfg = load_config(None, tiny_overrides(tmp_path / "r", **{**ATTRIBUTES, "extra_loss.batch_size": 3,
                                                                 "grad_accum": 2}))  # fmt: skip
    with pytest.raises(ValueError, match="extra_loss.batch_size 3 must be divisible"):
        train(cfg)
    # Resuming a run that had no attribute head with one is refused, not silently restarted.
    plain = load_config(None, tiny_overrides(tmp_path / "p"))
    train(plain, stop_after=2)
    with pytest.raises(ValueError, match="without an extra_loss"):
        train(load_config(None, tiny_overrides(tmp_path / "p", **{**ATTRIBUTES,
                                                                   "extra_loss.batch_size": 2})))  # fmt: skip


def test_branch_pretraining_writes_what_branch_init_loads(tmp_path):
    from safetensors.torch import load_file

    from seggpt.train.trainer import load_branch

    pretrain = project_module("pretrain_branch")  # projects/synthcontext/scripts/pretrain_branch.py
    # Scenes rendered by two processes are the scenes rendered here, in order.
    for a, b in zip(pretrain.render_pool(3, 5, 3, 32, workers=2), pretrain.render_pool(3, 5, 3, 32, workers=1),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)

    out = tmp_path / "branch.safetensors"
    cfg = pretrain.BranchPretrainConfig(channels=(4, 8, 8), depth=2, image_size=32, pool=4, steps=2, batch_size=2,
                                        threads=1)  # fmt: skip
    stats = pretrain.pretrain_branch(cfg, out, progress=False)
    assert set(stats["accuracy"]) == {"shape", "texture", "colour"}
    assert all(0.0 <= v <= 1.0 for v in stats["accuracy"].values())
    with pytest.raises(FileExistsError, match="overwrite"):
        pretrain.pretrain_branch(cfg, out, progress=False)
    # The package reads the file (model.branch_init; its use in training: test_train.py).
    model = SegGPT(vit_tiny(branch_channels=(4, 8, 8)))
    load_branch(model, out)
    for k, v in load_file(out).items():
        assert torch.equal(model.patch_embed.branch.stages.state_dict()[k], v), k
