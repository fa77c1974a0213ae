"""The correspondence prior of the FPN decoder (``config.fine_prior``): its arithmetic against a plain loop, the
switched-off start it loads from an older model with, and the predictor's cached path against the whole canvas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import randomize_
from seggpt.coloring import build_palette, paint
from seggpt.config import lite_small
from seggpt.modeling import SegGPT
from seggpt.modeling.efficientnet import FrozenBatchNorm2d
from seggpt.modeling.seggpt import PRIOR_TAU, PRIOR_TOPK, correspondence_prior, with_fine_prior
from seggpt.predictor import SegGPTPredictor
from seggpt.transforms import normalize, resize_mask, to_chw


def _lite(fine_prior: bool, seed: int = 0) -> SegGPT:
    cfg = lite_small(
        img_size=(128, 64), embed_dim=32, depth=2, num_heads=2, out_indices=(0, 1), merge_index=0, pretrain_img_size=64
    )
    torch.manual_seed(seed)
    m = randomize_(SegGPT(cfg.replace(fine_prior=fine_prior)), std=0.1).eval()
    with torch.no_grad():  # an encoder whose features differ from pixel to pixel (std 0.1 saturates it)
        for mod in m.image_encoder.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.weight.normal_(0, 0.5 / mod.weight[0].numel() ** 0.5)
            elif isinstance(mod, FrozenBatchNorm2d):
                mod.weight.fill_(1.0)
                mod.bias.zero_()
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
    return m


def _loop_prior(query, keys, values, valid):
    """One query pixel at a time, in float64: sort the valid keys by cosine similarity, softmax the best k."""
    n, d, h, w = query.shape
    out = np.zeros((n, 4, h, w))
    for i in range(n):
        ok = np.flatnonzero(valid[i])
        for y in range(h):
            for x in range(w):
                if not len(ok):
                    continue
                sims = keys[i, ok] @ query[i, :, y, x]
                best = np.argsort(-sims, kind="stable")[:PRIOR_TOPK]
                e = np.exp((sims[best] - sims[best].max()) / PRIOR_TAU)
                wgt = e / e.sum()
                out[i, :3, y, x] = wgt @ values[i, ok[best]]
                out[i, 3, y, x] = 1.0
    return out


def test_prior_equals_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    n, d, h, w, k = 3, 6, 4, 5, 40
    query = torch.nn.functional.normalize(torch.randn(n, d, h, w, generator=g), dim=1)
    keys = torch.nn.functional.normalize(torch.randn(n, k, d, generator=g), dim=2)
    values = torch.randn(n, k, 3, generator=g)
    valid = torch.rand(n, k, generator=g) > 0.4
    valid[1, :] = False  # nothing to read: a zero prior
    valid[2, :] = False
    valid[2, :4] = True  # fewer readable pixels than PRIOR_TOPK
    got = correspondence_prior(query, keys, values, valid)
    want = _loop_prior(query.double().numpy(), keys.double().numpy(), values.double().numpy(), valid.numpy())
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    assert got[1].abs().max() == 0
    torch.testing.assert_close(got[0, 3], torch.ones(h, w))
    # Row chunks change nothing.
    import seggpt.modeling.seggpt as modeling

    old, modeling.PRIOR_CHUNK = modeling.PRIOR_CHUNK, 7 * k
    try:
        torch.testing.assert_close(correspondence_prior(query, keys, values, valid), got)
    finally:
        modeling.PRIOR_CHUNK = old


def test_an_older_model_loads_switched_off():
    """with_fine_prior: the model with the prior answers exactly as the one it was loaded from."""
    old = _lite(False)
    new = SegGPT(old.config.replace(fine_prior=True)).eval()
    new.load_state_dict(with_fine_prior(old.state_dict()))
    g = torch.Generator().manual_seed(2)
    images, masks = torch.randn(2, 3, 128, 64, generator=g), torch.randn(2, 3, 128, 64, generator=g)
    bmp, st = old.query_mask(), torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(new(images, masks, bmp, st), old(images, masks, bmp, st), rtol=0, atol=0)
    with torch.no_grad():  # and the prior is read once its weights are not zero
        new.decoder_pred.fuse8.conv.weight[:, -4:].normal_(0, 0.5)
        assert (new(images, masks, bmp, st) - old(images, masks, bmp, st)).abs().max() > 1e-3


def test_what_each_image_reads():
    """Queries read their examples; at inference an example reads nothing (its query is all masked), in
    training the visible patches of its own query."""
    m = _lite(True)
    g = torch.Generator().manual_seed(3)
    images, masks = torch.randn(2, 3, 128, 64, generator=g), torch.randn(2, 3, 128, 64, generator=g)
    _, skips = m.embed_image_canvas(images)
    prior = m.canvas_prior(skips[2], masks, m.query_mask())  # (4, 4, 8, 8): example, query, example, query
    assert prior.shape == (4, 4, 8, 8)
    torch.testing.assert_close(m.canvas_prior(skips[2], masks, m.query_mask(), query_only=True), prior[1::2])
    assert (prior[0::2] == 0).all()
    torch.testing.assert_close(prior[1::2, 3], torch.ones(2, 8, 8))
    # An example whose mask is one colour gives every query pixel that colour.
    flat = masks.clone()
    flat[:, :, :64] = torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1)
    colours = m.canvas_prior(skips[2], flat, m.query_mask())[1::2, :3]
    torch.testing.assert_close(colours, torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1).expand_as(colours))
    # Block masking: the top-left token of the query visible, everything else of the query masked.
    bmp = m.query_mask().clone()
    bmp[0, 4 * 4] = False
    prior = m.canvas_prior(skips[2], masks, bmp)
    torch.testing.assert_close(prior[0::2, 3], torch.ones(2, 8, 8))
    want = masks[:, :, 64:72, 0:8].mean(dim=(2, 3))  # the one readable cell: the visible token's first 8x8
    readable = masks[:, :, 64:80, 0:16].reshape(2, 3, 2, 8, 2, 8).mean(dim=(3, 5)).flatten(2)  # its four cells
    assert want.shape == (2, 3)
    for b in range(2):  # every example pixel reads a mix of those four cells only
        mix = prior[2 * b, :3].flatten(1)
        lo, hi = readable[b].min(dim=1).values, readable[b].max(dim=1).values
        assert (mix >= lo[:, None] - 1e-5).all() and (mix <= hi[:, None] + 1e-5).all()


def test_query_only_forward_is_the_lower_half():
    """forward(query_only) computes the queries' prior alone; its answer is the whole canvas's lower half."""
    m = _lite(True)
    g = torch.Generator().manual_seed(4)
    images, masks = torch.randn(2, 3, 128, 64, generator=g), torch.randn(2, 3, 128, 64, generator=g)
    st = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        full = m(images, masks, m.query_mask(), st)
        lower = m(images, masks, m.query_mask(), st, query_only=True)
    torch.testing.assert_close(lower, full[:, :, 64:], rtol=0, atol=1e-6)
    assert full[:, :, 64:].abs().mean() > 1e-3


@pytest.mark.parametrize("ensemble, k", [("feature", 1), ("feature", 3), ("none", 3), ("spatial", 3)])
def test_cached_path_equals_the_whole_canvas(ensemble, k):
    m = _lite(True, seed=1)
    with torch.no_grad():
        m.decoder_pred.fuse8.conv.weight[:, -4:].normal_(0, 0.5)
        m.decoder_pred.fuse4.conv.weight[:, -4:].normal_(0, 0.5)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40 + 3 * i, 50 - 2 * i, 3), dtype=np.uint8) for i in range(k)]
    masks = []
    for img in images:
        a = np.zeros(img.shape[:2], np.int64)
        a[5:20, 10:30] = 1
        masks.append(a)
    targets = [rng.integers(0, 256, (30 + 5 * i, 20 + 7 * i, 3), dtype=np.uint8) for i in range(3)]
    predictor = SegGPTPredictor(m)
    predictor.set_prompts(images, masks, ensemble=ensemble)
    queries, _ = predictor.prepare_targets(targets)
    fast = predictor.paint(queries)
    torch.testing.assert_close(fast, predictor.paint(queries, cached=False), rtol=0, atol=1e-3)
    # The prior is read: the same model without it answers otherwise.
    off = SegGPT(m.config).eval()
    off.load_state_dict(m.state_dict())
    with torch.no_grad():
        off.decoder_pred.fuse8.conv.weight[:, -4:] = 0
        off.decoder_pred.fuse4.conv.weight[:, -4:] = 0
    other = SegGPTPredictor(off)
    other.set_prompts(images, masks, ensemble=ensemble)
    assert (other.paint(queries) - fast).abs().max() > 1.0


def test_training_reaches_the_prior_weights_only_through_the_decoder():
    m = _lite(True).train()
    g = torch.Generator().manual_seed(4)
    images, masks = torch.randn(2, 3, 128, 64, generator=g), torch.randn(2, 3, 128, 64, generator=g)
    bmp = torch.rand(2, 32, generator=g) > 0.5
    _, loss = m(images, masks, bmp, torch.zeros(2, dtype=torch.long), return_loss=True)
    loss.backward()
    assert m.decoder_pred.fuse8.conv.weight.grad[:, -4:].abs().sum() > 0
    assert m.decoder_pred.fuse4.conv.weight.grad[:, -4:].abs().sum() > 0


def test_training_adds_the_prior_to_a_model_without_it(tmp_path):
    """configs/embedded_stage5.yaml: init_from a checkpoint without the prior, the prior switched
    on in the config, builds a model that answers exactly as the checkpoint does (its prior inputs at zero weight)."""
    from seggpt.checkpoint import load_model, save_native
    from seggpt.train import load_config
    from seggpt.train.trainer import build_model

    old = _lite(False)
    save_native(old, tmp_path / "stage4.safetensors")
    cfg = load_config(None, ["model.preset=None", f"model.init_from={tmp_path / 'stage4.safetensors'}"])
    cfg.model.overrides["fine_prior"] = True
    new = build_model(cfg).eval()
    stored = load_model(tmp_path / "stage4.safetensors", device="cpu").eval()
    assert new.config.fine_prior and not stored.config.fine_prior
    g = torch.Generator().manual_seed(5)
    images, masks = torch.randn(1, 3, 128, 64, generator=g), torch.randn(1, 3, 128, 64, generator=g)
    bmp, st = new.query_mask(), torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(new(images, masks, bmp, st), stored(images, masks, bmp, st), rtol=0, atol=1e-6)


def test_embeddings_are_reused_by_content():
    """The predictor embeds each image once while it stays among its latest (video: the annotated frame and the frames
    just segmented prompt the next); the answers equal a predictor that embeds everything every time, and a model
    changed in place embeds afresh."""
    import seggpt.predictor as predictor_module

    m = _lite(True, seed=2)
    embedded = []
    real = m.embed_images

    def counting(images):
        embedded.append(images.shape[0])
        return real(images)

    m.embed_images = counting
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (48, 40, 3), dtype=np.uint8) for _ in range(4)]
    first = np.zeros((48, 40), np.int64)
    first[10:30, 5:25] = 1

    def run(p: SegGPTPredictor) -> list[torch.Tensor]:
        """Frame 0 annotated; each next frame prompted by frame 0 and the frame before, with its answer."""

        def painted(labels: np.ndarray) -> torch.Tensor:
            small = resize_mask(torch.from_numpy(labels), p.config.image_size).numpy()
            return normalize(to_chw(paint(small, build_palette(1))))

        examples, answers = [(p.prepare_target(frames[0])[0], painted(first))], []
        for t in range(1, 4):
            p.set_prompt_tensors(torch.stack([e[0] for e in examples]), torch.stack([e[1] for e in examples]))
            q = p.prepare_target(frames[t])[0]
            answer = p.paint(q[None])[0]
            answers.append(answer)
            labels = p.decode(answer, (48, 40)).labels
            examples = [examples[0], (q, painted(labels))]
        return answers

    from seggpt.video import SegGPTVideoPredictor

    fast = SegGPTVideoPredictor(predictor=SegGPTPredictor(m)).predictor
    assert fast.keep_targets and not SegGPTPredictor(m).keep_targets  # video keeps its targets' embeddings
    cached = run(fast)
    assert embedded == [1, 1, 1, 1]  # frame 0 once as an example; then each target once, reused as an example
    embedded.clear()
    predictor_module.EMBED_CACHE, keep = 0, predictor_module.EMBED_CACHE
    try:
        plain = run(SegGPTPredictor(m))
    finally:
        predictor_module.EMBED_CACHE = keep
    assert embedded == [1, 1, 2, 1, 2, 1]
    for a, b in zip(cached, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-3)
    p = SegGPTPredictor(m)
    q = p.prepare_target(frames[1])[0][None]
    p.set_prompt_tensors(q, q)
    embedded.clear()
    p.set_prompt_tensors(q, q)
    assert embedded == []
    with torch.no_grad():
        m.image_proj.weight.mul_(2.0)
    p.set_prompt_tensors(q, q)
    assert embedded == [1]
    for i in range(predictor_module.EMBED_CACHE + 3):  # only the latest are kept
        p.set_prompt_tensors(q + i, q)
    assert len(p._embedded) == predictor_module.EMBED_CACHE
    many = torch.cat([q + i for i in range(predictor_module.EMBED_CACHE + 2)])  # more examples than it keeps
    p.set_prompt_tensors(many, many)
    assert p._x_top.shape[0] == many.shape[0] and len(p._embedded) == predictor_module.EMBED_CACHE
