"""The model against transformers' independent SegGPT, and the invariants of its forward."""

from __future__ import annotations

import pytest
import torch

from conftest import hf_config_for, randomize_
from seggpt.checkpoint import hf_to_official
from seggpt.config import SegGPTConfig, vit_large, vit_tiny
from seggpt.modeling import SegGPT


def _pair(cfg: SegGPTConfig):
    """Our model and transformers' SegGptForImageSegmentation holding the same random weights."""
    from transformers import SegGptForImageSegmentation

    hf = randomize_(SegGptForImageSegmentation(hf_config_for(cfg))).eval()
    ours = SegGPT(cfg).eval()
    ours.load_state_dict(hf_to_official(hf.state_dict()), strict=True)
    return ours, hf


def _inputs(cfg: SegGPTConfig, b: int, same_query: bool = False):
    h, w = cfg.image_size
    query = torch.randn(1 if same_query else b, 3, h, w).expand(b, -1, -1, -1)
    prompt_img, prompt_mask = torch.randn(b, 3, h, w), torch.randn(b, 3, h, w)
    return query, prompt_img, prompt_mask


def _ours(model, query, prompt_img, prompt_mask, seg_type, **kw):
    images = torch.cat([prompt_img, query], dim=2)
    masks = torch.cat([prompt_mask, prompt_mask], dim=2)
    st = torch.full((images.shape[0],), seg_type, device=images.device)
    return model(images, masks, model.query_mask(images.device), st, **kw)


def _vit_large_pair():
    """_pair for the released architecture, its weights scaled so that 24 random blocks keep their activations in a
    sane range."""
    ours, hf = _pair(vit_large())
    with torch.no_grad():
        for p in list(ours.parameters()) + list(hf.parameters()):
            p.mul_(0.1)
    return ours, hf


@pytest.mark.parametrize("task,seg_type", [("semantic", 0), ("instance", 1)])
def test_equals_transformers_tiny(task, seg_type):
    cfg = vit_tiny()
    ours, hf = _pair(cfg)
    query, pimg, pmask = _inputs(cfg, b=3)
    with torch.no_grad():
        ref = hf(pixel_values=query, prompt_pixel_values=pimg, prompt_masks=pmask, embedding_type=task).pred_masks
        out = _ours(ours, query, pimg, pmask, seg_type)
    assert out.shape == ref.shape == (3, 3, *cfg.img_size)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_equals_transformers_other_shapes():
    # Non-square canvas, 3 decoder taps, merge after block 0, no resizing of the position table.
    cfg = vit_tiny(img_size=(96, 48), depth=3, out_indices=(0, 1, 2), merge_index=0, pretrain_img_size=48)
    ours, hf = _pair(cfg)
    query, pimg, pmask = _inputs(cfg, b=2)
    with torch.no_grad():
        ref = hf(pixel_values=query, prompt_pixel_values=pimg, prompt_masks=pmask, embedding_type="semantic")
        out = _ours(ours, query, pimg, pmask, 0)
    torch.testing.assert_close(out, ref.pred_masks, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_equals_transformers_vit_large():
    ours, hf = _vit_large_pair()
    query, pimg, pmask = _inputs(ours.config, b=1)
    with torch.no_grad():
        ref = hf(pixel_values=query, prompt_pixel_values=pimg, prompt_masks=pmask, embedding_type="semantic")
        out = _ours(ours, query, pimg, pmask, 0)
    torch.testing.assert_close(out, ref.pred_masks, atol=1e-4, rtol=0)


def test_loss_equals_transformers():
    cfg = vit_tiny()
    ours, hf = _pair(cfg)
    query, pimg, pmask = _inputs(cfg, b=2)
    label = torch.randn_like(query)
    mask = ours.query_mask().expand(2, -1).clone()
    mask[:, :3] = True  # some example patches masked too, as in training
    with torch.no_grad():
        ref = hf(
            pixel_values=query,
            prompt_pixel_values=pimg,
            prompt_masks=pmask,
            labels=label,
            bool_masked_pos=mask,
            embedding_type="instance",
        )
        images, masks = torch.cat([pimg, query], 2), torch.cat([pmask, label], 2)
        pred, loss = ours(images, masks, mask, torch.ones(2), return_loss=True)
    torch.testing.assert_close(pred, ref.pred_masks, atol=1e-4, rtol=0)
    # The released loss divides by (count + 0.01); transformers by count.
    torch.testing.assert_close(loss, ref.loss, rtol=1e-4, atol=0)


def _hf_released_ensemble(hf, merge_index: int):
    """transformers' ensemble averages across both streams at the merge block; the released code averages per
    stream there. Route that one block through transformers' per-stream branch to get the released rule."""
    layer = hf.model.encoder.layers[merge_index]
    original = layer.forward

    def forward(hidden_states, ensemble_cond, *args, **kwargs):
        return original(hidden_states, 2, *args, **kwargs)

    layer.forward = forward


def test_feature_ensemble_equals_released_rule():
    cfg = vit_tiny()
    ours, hf = _pair(cfg)
    _hf_released_ensemble(hf, cfg.merge_index)
    query, pimg, pmask = _inputs(cfg, b=4, same_query=True)
    with torch.no_grad():
        ref = hf(
            pixel_values=query,
            prompt_pixel_values=pimg,
            prompt_masks=pmask,
            feature_ensemble=True,
            embedding_type="semantic",
        ).pred_masks
        out = _ours(ours, query, pimg, pmask, 0, feature_ensemble=True)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_feature_ensemble_invariants():
    cfg = vit_tiny()
    model = randomize_(SegGPT(cfg)).eval()
    query, pimg, pmask = _inputs(cfg, b=4, same_query=True)
    with torch.no_grad():
        # One prompt: the ensemble is a no-op.
        one = _ours(model, query[:1], pimg[:1], pmask[:1], 0)
        one_ens = _ours(model, query[:1], pimg[:1], pmask[:1], 0, feature_ensemble=True)
        torch.testing.assert_close(one_ens, one, atol=0, rtol=0)
        # Several prompts: the query half of every decoder tap is the same in every entry. (The decoded canvas
        # differs in its first query pixel row: the 3x3 conv there reads the row above, from each prompt.)
        images, masks = torch.cat([pimg, query], 2), torch.cat([pmask, pmask], 2)
        tokens = model.embed(model.patch_embed(images), model.patch_embed(masks), model.query_mask(), torch.zeros(4))
        for tap in model.forward_encoder(tokens, num_prompts=4):
            tq = tap[:, tap.shape[1] // 2 :]
            for i in range(1, 4):
                torch.testing.assert_close(tq[i], tq[0], atol=1e-6, rtol=0)
        out = _ours(model, query, pimg, pmask, 0, feature_ensemble=True)
        q = out[:, :, out.shape[2] // 2 :]
        perm = torch.tensor([2, 0, 3, 1])
        out_perm = _ours(model, query, pimg[perm], pmask[perm], 0, feature_ensemble=True)
        torch.testing.assert_close(out_perm[0, :, out.shape[2] // 2 + 1 :], q[0, :, 1:], atol=1e-5, rtol=0)
        # And it does something: the ensemble differs from the first prompt alone.
        assert (q[0] - one[0, :, out.shape[2] // 2 :]).abs().max() > 1e-3


def test_ensemble_groups_equal_separate_calls():
    # T queries x P prompts in one batch equals T separate ensembles of P.
    cfg = vit_tiny()
    model = randomize_(SegGPT(cfg)).eval()
    t, p = 2, 3
    h, w = cfg.image_size
    queries = torch.randn(t, 3, h, w)
    pimg, pmask = torch.randn(p, 3, h, w), torch.randn(p, 3, h, w)
    with torch.no_grad():
        separate = [
            _ours(model, queries[i : i + 1].expand(p, -1, -1, -1), pimg, pmask, 0, feature_ensemble=True)[0]
            for i in range(t)
        ]
        q = queries.repeat_interleave(p, dim=0)
        both = _ours(
            model, q, pimg.repeat(t, 1, 1, 1), pmask.repeat(t, 1, 1, 1), 0, feature_ensemble=True, num_prompts=p
        )
    for i in range(t):
        torch.testing.assert_close(both[i * p], separate[i], atol=1e-5, rtol=0)


def test_sdpa_equals_eager_attention():
    cfg = vit_tiny()
    model = randomize_(SegGPT(cfg)).eval()
    query, pimg, pmask = _inputs(cfg, b=2)
    with torch.no_grad():
        sdpa = _ours(model, query, pimg, pmask, 1)
        model.set_attention("eager")
        eager = _ours(model, query, pimg, pmask, 1)
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="sdpa"):
        model.set_attention("flash9")


def test_query_only_decoder_is_exact():
    cfg = vit_tiny()
    model = randomize_(SegGPT(cfg)).eval()
    query, pimg, pmask = _inputs(cfg, b=2)
    with torch.no_grad():
        full = _ours(model, query, pimg, pmask, 0)
        lower = _ours(model, query, pimg, pmask, 0, query_only=True)
    torch.testing.assert_close(lower, full[:, :, cfg.img_size[0] // 2 :], atol=1e-6, rtol=0)


def test_one_window_covering_the_grid_equals_global():
    cfg = vit_tiny(img_size=(64, 64))  # 8x8 token grid, one 8x8 window
    glob = randomize_(SegGPT(cfg)).eval()
    win = SegGPT(cfg.replace(window_size=8, global_attn_indexes=(1,))).eval()
    win.load_state_dict(glob.state_dict(), strict=True)
    query, pimg, pmask = _inputs(cfg, b=1)
    with torch.no_grad():
        torch.testing.assert_close(_ours(win, query, pimg, pmask, 0), _ours(glob, query, pimg, pmask, 0))


def test_windowed_blocks_are_local():
    # With 4x4 windows, a change in one corner of the query cannot reach the far corner through a windowed-only
    # model (a single block), but does through a global one.
    cfg = vit_tiny(img_size=(64, 64), depth=1, out_indices=(0,), merge_index=0)
    win = randomize_(SegGPT(cfg.replace(window_size=4))).eval()
    query, pimg, pmask = _inputs(cfg, b=1)
    with torch.no_grad():
        base = _ours(win, query, pimg, pmask, 0)
        q2 = query.clone()
        q2[..., :8, :8] += 5.0  # the top-left token of the query half
        moved = _ours(win, q2, pimg, pmask, 0)
    diff = (moved - base).abs()[0].sum(0)
    assert diff[32:40, :8].max() > 0  # it changes its own window
    assert diff[56:, 56:].max() == 0  # but not a far window


def test_bf16_forward_close_to_fp32():
    cfg = vit_tiny()
    model = randomize_(SegGPT(cfg), std=0.05).eval()
    query, pimg, pmask = _inputs(cfg, b=2)
    with torch.no_grad():
        ref = _ours(model, query, pimg, pmask, 0)
        half = _ours(model.to(torch.bfloat16), query.bfloat16(), pimg.bfloat16(), pmask.bfloat16(), 0)
    assert half.dtype == torch.bfloat16
    assert (half.float() - ref).abs().mean() < 0.05


def test_gradient_checkpointing_same_gradients():
    cfg = vit_tiny()
    model = randomize_(SegGPT(cfg), std=0.05).train()
    query, pimg, pmask = _inputs(cfg, b=2)
    images, masks = torch.cat([pimg, query], 2), torch.cat([pmask, pmask], 2)
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        model.grad_checkpointing = ckpt
        _, loss = model(images, masks, model.query_mask(), torch.zeros(2), return_loss=True)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)


def test_stem_embeds_each_image_of_the_canvas_alone():
    cfg = vit_tiny(stem_channels=(8, 16))  # two stride-2 convs, then a 2x2 projection: patch 8
    model = randomize_(SegGPT(cfg)).eval()
    query, pimg, _ = _inputs(cfg, b=2)
    with torch.no_grad():
        tokens = model.embed_canvas(torch.cat([pimg, query], 2))
        top, bottom = tokens.split(tokens.shape[1] // 2, dim=1)
        torch.testing.assert_close(top, model.patch_embed(pimg))
        torch.testing.assert_close(bottom, model.patch_embed(query))
        # The 3x3 convs reach across pixels, yet the query's tokens do not see the example's pixels.
        other = model.embed_canvas(torch.cat([pimg + 3.0, query], 2))
    torch.testing.assert_close(other[:, tokens.shape[1] // 2 :], bottom)
    assert not torch.allclose(other[:, : tokens.shape[1] // 2], top)


def test_without_a_stem_the_canvas_embeds_as_one_image():
    cfg = vit_tiny()
    model = randomize_(SegGPT(cfg)).eval()
    query, pimg, _ = _inputs(cfg, b=2)
    canvas = torch.cat([pimg, query], 2)
    with torch.no_grad():
        torch.testing.assert_close(model.embed_canvas(canvas), model.patch_embed(canvas), rtol=0, atol=0)


def test_a_new_conv_branch_leaves_a_trained_model_as_it_was():
    cfg = vit_tiny()
    trained = randomize_(SegGPT(cfg)).eval()
    model = SegGPT(cfg.replace(branch_channels=(4, 8, 8))).eval()
    missing, unexpected = model.load_state_dict(trained.state_dict(), strict=False)
    assert unexpected == [] and missing and all(k.startswith("patch_embed.branch.") for k in missing)
    query, pimg, pmask = _inputs(cfg, b=2)
    images, masks = torch.cat([pimg, query], 2), torch.cat([pmask, pmask], 2)
    seg = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        bmp = model.query_mask()
        torch.testing.assert_close(model(images, masks, bmp, seg), trained(images, masks, bmp, seg), rtol=0, atol=0)
        # Once its output conv moves, the branch changes the tokens, and still per image: the query's tokens
        # never see the example's pixels.
        torch.nn.init.normal_(model.patch_embed.branch.out.weight, std=0.5)
        assert not torch.allclose(model.embed_canvas(images), trained.embed_canvas(images))
        tokens = model.embed_canvas(images)
        other = model.embed_canvas(torch.cat([pimg + 3.0, query], 2))
    half = tokens.shape[1] // 2
    torch.testing.assert_close(other[:, half:], tokens[:, half:])
    assert not torch.allclose(other[:, :half], tokens[:, :half])


def test_parameter_count_of_the_released_architecture():
    with torch.device("meta"):
        model = SegGPT(vit_large())
    n = sum(p.numel() for p in model.parameters())
    n_dec = model.decoder_embed.weight.numel() + model.decoder_embed.bias.numel()
    assert round(n / 1e6, 1) == 370.7  # SEGGPT.md section 1
    assert round(n_dec / 1e6, 1) == 67.1


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        vit_tiny(img_size=(60, 32))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        vit_tiny(num_heads=5)
    with pytest.raises(ValueError, match="merge_index"):
        vit_tiny(merge_index=3, out_indices=(1, 3))
    with pytest.raises(ValueError, match="stem of 4 stride-2 convs"):
        vit_tiny(stem_channels=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="one stride-2 stage per halving of patch_size 8, got 2"):
        vit_tiny(branch_channels=(8, 8))
    with pytest.raises(ValueError, match="branch_depth must be >= 1"):
        vit_tiny(branch_channels=(8, 8, 8), branch_depth=0)
    with pytest.raises(ValueError, match="unknown SegGPTConfig fields"):
        SegGPTConfig.from_dict({"width": 3})
    assert SegGPTConfig.from_dict(vit_tiny().to_dict()) == vit_tiny()
