"""The attribute loss (seggpt.train.attributes): its labels, its head, and training with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.test_train import tiny_overrides

from seggpt.config import vit_tiny
from seggpt.data import synth
from seggpt.data.masking import MaskingConfig
from seggpt.modeling import SegGPT
from seggpt.train import load_config, train
from seggpt.train.attributes import (
    IGNORE,
    AttributeHead,
    WithAttributes,
    attribute_batch,
    attribute_loss,
    attribute_maps,
)
from seggpt.train.metrics import read_metrics


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
    both = WithAttributes(model, head)
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
    over = {"steps": 4, "attributes.weight": 0.5, "attributes.batch_size": 2, "data.masking.half_prob": 0.5}
    ref = train(load_config(None, tiny_overrides(tmp_path / "ref", **over)))
    rows = read_metrics(tmp_path / "ref" / "metrics.jsonl")
    assert all(np.isfinite(r["attribute_loss"]) and r["attribute_loss"] > 0 for r in rows)
    from safetensors.torch import load_file

    saved = load_file(ref.model_path)
    assert set(saved) == set(SegGPT(vit_tiny()).state_dict())  # the head is not part of the model
    cfg = load_config(None, tiny_overrides(tmp_path / "cut", **over))
    assert train(cfg, stop_after=2).step == 2
    done = train(cfg)
    for (k, v), w in zip(ref.model.state_dict().items(), done.model.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    # The attribute loss changes training: the same run without it ends elsewhere.
    plain = train(load_config(None, tiny_overrides(tmp_path / "plain", **{**over, "attributes.weight": 0})))
    assert any(not torch.equal(v, w) for v, w in zip(ref.model.state_dict().values(),
                                                     plain.model.state_dict().values(), strict=True))  # fmt: skip


def test_attribute_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="attributes.weight must be >= 0"):
        load_config(None, ["attributes.weight=-1"])
    with pytest.raises(ValueError, match="not supported with distributed=fsdp"):
        load_config(None, ["attributes.weight=0.5", "distributed=fsdp"])
    cfg = load_config(None, tiny_overrides(tmp_path / "r", **{"attributes.weight": 0.5, "attributes.batch_size": 3,
                                                                 "grad_accum": 2}))  # fmt: skip
    with pytest.raises(ValueError, match="attributes.batch_size 3 must be divisible"):
        train(cfg)
    # Resuming a run that had no attribute head with one is refused, not silently restarted.
    plain = load_config(None, tiny_overrides(tmp_path / "p"))
    train(plain, stop_after=2)
    with pytest.raises(ValueError, match="without attributes.weight"):
        train(load_config(None, tiny_overrides(tmp_path / "p", **{"attributes.weight": 0.5,
                                                                   "attributes.batch_size": 2})))  # fmt: skip
