"""CPU inference at the hardware's limit: the feature ensemble that computes the query half once per query
(against the released rule as ``SegGPT.forward`` runs it), and int8 linear layers (against their own integer
arithmetic done independently, and against float32)."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import load_script, randomize_
from seggpt.checkpoint import load_model, save_native, to_precision
from seggpt.config import lite_small, vit_tiny
from seggpt.devices import int8_compute_dtype, parse_dtype
from seggpt.modeling import SegGPT
from seggpt.modeling.efficientnet import FrozenBatchNorm2d
from seggpt.modeling.quant import Int8Linear, _onednn_exact, is_quantized, quantize_linears_
from seggpt.predictor import SegGPTPredictor


def _tiny_lite():
    cfg = lite_small(img_size=(128, 64), embed_dim=32, depth=2, num_heads=2, out_indices=(0, 1), merge_index=0)
    torch.manual_seed(0)
    m = randomize_(SegGPT(cfg.replace(pretrain_img_size=64)), std=0.1).eval()
    with torch.no_grad():  # batch-norm statistics that are not the identity
        for mod in m.modules():
            if isinstance(mod, FrozenBatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
    return m


def _ensemble_inputs(m: SegGPT, t: int, p: int):
    """T queries x P prompts, P fastest: each query repeated under P different examples."""
    g = torch.Generator().manual_seed(1)
    h, w = m.config.image_size
    query = torch.randn(t, 3, h, w, generator=g).repeat_interleave(p, dim=0)
    prompt, pmask = torch.randn(t * p, 3, h, w, generator=g), torch.randn(t * p, 3, h, w, generator=g)
    return torch.cat([prompt, query], dim=2), torch.cat([pmask, pmask], dim=2)


def _shared(m: SegGPT, images, masks, p: int, query_only: bool = True):
    """The shared path as the predictor runs it: embed, forward_encoder_shared, decode each query once."""
    b = images.shape[0]
    x, skips = m.embed_image_canvas(images)
    tokens = m.embed(x, m.embed_canvas(masks), m.query_mask().expand(b, -1), torch.zeros(b, dtype=torch.long))
    taps = m.forward_encoder_shared(tokens, p)
    if skips:  # (2B, ...), example before query: the FPN decoder needs entry 0's images
        skips = [s.reshape(b, 2, *s.shape[1:])[::p] for s in skips]
        skips = [s[:, 1] for s in skips] if query_only else [s.flatten(0, 1) for s in skips]
    return m.forward_decoder(taps, query_only=query_only, skips=skips), taps


def _released(m: SegGPT, images, masks, p: int, query_only: bool = True):
    """The released rule on the P whole canvases: the answer, the encoder taps, and the tokens they came from."""
    st = torch.zeros(images.shape[0], dtype=torch.long)
    out = m(images, masks, m.query_mask(), st, feature_ensemble=True, num_prompts=p, query_only=query_only)
    x, _ = m.embed_image_canvas(images)
    tokens = m.embed(x, m.embed_canvas(masks), m.query_mask(), st)
    return out, m.forward_encoder(tokens, p), tokens


# The shared feature ensemble -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, impl",
    [
        ({}, "sdpa"),
        ({}, "eager"),
        ({"merge_index": 0, "out_indices": (0, 2, 3)}, "sdpa"),
        ({"img_size": (64, 64), "window_size": 4, "global_attn_indexes": (1,)}, "sdpa"),  # windowed: run whole
        ({"use_rel_pos": False}, "sdpa"),
    ],
    ids=["tiny", "eager", "merge-0", "windowed", "no-rel-pos"],
)
@pytest.mark.parametrize("query_only", [True, False])
def test_shared_ensemble_equals_the_released_rule(overrides, impl, query_only):
    torch.manual_seed(0)
    m = randomize_(SegGPT(vit_tiny(**overrides)), std=0.2).eval()
    m.set_attention(impl)
    t, p = 2, 3
    images, masks = _ensemble_inputs(m, t, p)
    with torch.no_grad():
        ref, ref_taps, _ = _released(m, images, masks, p, query_only)
        out, taps = _shared(m, images, masks, p, query_only)
    for a, b in zip(taps, ref_taps, strict=True):
        torch.testing.assert_close(a, b[::p], rtol=0, atol=2e-6)
    assert out.shape == (t, *ref.shape[1:])
    torch.testing.assert_close(out, ref[::p], rtol=0, atol=2e-6)
    assert ref[::p].abs().mean() > 0.05  # the answer is not trivially zero


def test_shared_ensemble_of_the_lite_model():
    m = _tiny_lite()
    t, p = 2, 3
    images, masks = _ensemble_inputs(m, t, p)
    with torch.no_grad():
        ref, ref_taps, tokens = _released(m, images, masks, p)
        alone = m.forward_encoder(tokens[::p], 1)  # each query with its first example only (both streams)
        out, taps = _shared(m, images, masks, p)
    torch.testing.assert_close(out, ref[::p], rtol=0, atol=1e-5)
    half = m.config.grid_size[0] // 2
    for a, b, one in zip(taps, ref_taps, alone, strict=True):
        torch.testing.assert_close(a, b[::p], rtol=0, atol=2e-6)
        assert (a[:, half:] - one[:, half:]).abs().mean() > 1e-4  # the ensemble moves them, far beyond atol


def test_shared_ensemble_runs_the_query_half_once():
    torch.manual_seed(0)
    m = randomize_(SegGPT(vit_tiny()), std=0.2).eval()
    t, p = 2, 3
    images, masks = _ensemble_inputs(m, t, p)
    rows = []
    m.blocks[-1].mlp.fc1.register_forward_hook(lambda mod, args, out: rows.append(args[0][..., 0].numel()))
    with torch.no_grad():
        m(images, masks, m.query_mask(), torch.zeros(t * p), feature_ensemble=True, num_prompts=p)
        plain, rows[:] = sum(rows), []
        _shared(m, images, masks, p)
    half = m.num_patches // 2
    assert plain == t * p * 2 * half
    assert sum(rows) == t * p * half + t * half  # the query half once per query: (P + 1) / 2P of the work


def test_shared_ensemble_checks_its_batch():
    m = SegGPT(vit_tiny()).eval()
    hp, wp = m.config.grid_size
    with pytest.raises(ValueError, match="not 2 streams x groups of 3 prompts"):
        m.forward_encoder_shared(torch.zeros(8, hp, wp, m.config.embed_dim), 3)


# int8 linear layers ----------------------------------------------------------------------------------------
def _quantize_np(a: np.ndarray, per_row: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8, per row or per tensor, written apart from the library (round half to even, as torch)."""
    top = np.abs(a).max(axis=1, keepdims=True) if per_row else np.abs(a).max()
    scale = np.maximum(top, 1e-12) / 127.0
    return np.clip(np.rint(a / scale), -127, 127), scale


def test_int8_kernel_is_not_onednn_on_x86_without_vnni(monkeypatch):
    """oneDNN's int8 products saturate on x86 without VNNI (0.3 off on an AVX2-only CPU): int_mm is used there."""
    import seggpt.modeling.quant as quant

    monkeypatch.setattr(quant.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False, raising=False)
    assert Int8Linear(8, 4).kernel == "int_mm"
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: True, raising=False)
    monkeypatch.setattr(quant, "_onednn_fast", lambda: True)
    assert Int8Linear(8, 4).kernel == ("onednn" if torch.backends.mkldnn.is_available() else "int_mm")


@pytest.mark.parametrize(("onednn_s", "int_mm_s", "kernel"), [(0.05, 0.0002, "int_mm"), (0.0001, 0.0002, "onednn")])
def test_int8_kernel_is_not_onednn_where_its_probe_finds_it_slow(monkeypatch, onednn_s, int_mm_s, kernel):
    """oneDNN ran its reference int8 kernel on an AMD EPYC with AVX512-VNNI (800 times slower than fp32): a probe
    times it once per process against the int_mm path, and int_mm is used where oneDNN is far slower."""
    import seggpt.modeling.quant as quant

    monkeypatch.setattr(quant, "_onednn_exact", lambda: True)
    monkeypatch.setattr(quant, "_probe_seconds", lambda: (onednn_s, int_mm_s))
    quant._onednn_fast.cache_clear()
    try:
        assert Int8Linear(8, 4).kernel == kernel
    finally:
        quant._onednn_fast.cache_clear()  # the next call probes this CPU again


def test_int8_kernel_probe_times_both_kernels():
    import seggpt.modeling.quant as quant

    if not _onednn_exact():
        pytest.skip("no oneDNN int8 kernel that is exact here (no oneDNN, or an x86 CPU without VNNI)")
    onednn_s, int_mm_s = quant._probe_seconds()
    assert 0 < onednn_s < 10 and 0 < int_mm_s < 10


@pytest.mark.parametrize("activation", ["none", "gelu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kernel", ["onednn", "int_mm"])
def test_int8_linear_equals_its_integer_arithmetic(kernel, dtype, activation):
    if kernel == "onednn" and not _onednn_exact():
        pytest.skip("no oneDNN int8 kernel that is exact here (no oneDNN, or an x86 CPU without VNNI)")
    torch.manual_seed(0)
    lin = nn.Linear(48, 40)
    x = torch.randn(2, 5, 48).to(dtype)
    q = Int8Linear.from_linear(lin, activation)
    q.kernel = kernel
    x0 = x.clone()
    with torch.no_grad():
        out = q(x)
    assert out.dtype == dtype and out.shape == (2, 5, 40)
    assert torch.equal(x, x0)  # the input is left as it was
    w8, ws = _quantize_np(lin.weight.detach().double().numpy(), per_row=True)
    # int_mm: a scale per token; onednn: a scale per sample (each of the 2 entries of the batch).
    rows = [x.float().reshape(10, 48).double().numpy()] if kernel == "int_mm" else x.float().double().numpy()
    x8, xs = zip(*(_quantize_np(r, per_row=kernel == "int_mm") for r in rows), strict=True)
    deq = np.concatenate([a * b for a, b in zip(x8, xs, strict=True)])
    want = torch.from_numpy((deq @ w8.T) * ws.T + lin.bias.detach().double().numpy())
    want = F.gelu(want) if activation == "gelu" else want
    tol = 1e-5 if dtype is torch.float32 else 1e-2  # bf16: the output's own rounding
    torch.testing.assert_close(out.double().reshape(10, 40), want, rtol=tol, atol=tol)
    with torch.no_grad():  # each sample's answer is its own, whatever else is in the batch
        torch.testing.assert_close(q(x[1:]), out[1:], rtol=0, atol=0)
    ref = lin(x.float()).detach()
    ref = F.gelu(ref) if activation == "gelu" else ref
    assert (out.float() - ref).abs().mean() < 0.01 * ref.abs().mean()  # int8 is within 1 % of float32


@pytest.mark.parametrize("k", [48, 1040, 2500])
def test_int8_matmul_is_exact(k):
    """The CPU's float32 route to the integer product against int64 arithmetic: random values, and the worst case
    (every product 127 * 127, sums far beyond float32's 2**24 when K > 1040)."""
    from seggpt.modeling.quant import int8_matmul

    g = torch.Generator().manual_seed(k)
    q = torch.randint(-127, 128, (33, k), generator=g, dtype=torch.int8)
    w = torch.randint(-127, 128, (17, k), generator=g, dtype=torch.int8)
    q[0], w[0], w[1] = 127, 127, -127
    w[2], w[2, 0] = 127, 1  # an odd sum: float32 could not hold it above 2**24
    got = int8_matmul(q, w)
    assert got.dtype == torch.int32
    assert torch.equal(got.long(), q.long() @ w.long().t())
    assert got[0, 0] == 127 * 127 * k and got[0, 1] == -127 * 127 * k and got[0, 2] == 127 * (127 * (k - 1) + 1)


def test_int8_scales_and_bias_stay_float32_and_the_model_copies():
    m = quantize_linears_(nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Sequential(nn.Linear(8, 4))))
    assert isinstance(m[0], Int8Linear) and isinstance(m[2][0], Int8Linear) and is_quantized(m)
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        out = m(x)  # packs the weights for oneDNN
        torch.testing.assert_close(copy.deepcopy(m)(x), out, rtol=0, atol=0)
        torch.testing.assert_close(pickle.loads(pickle.dumps(m))(x), out, rtol=0, atol=0)
    m.to(torch.bfloat16)
    for lin in (m[0], m[2][0]):
        assert lin.weight.dtype is torch.int8
        assert lin.weight_scale.dtype is torch.float32 and lin.bias.dtype is torch.float32


def test_load_model_int8_is_close_to_float32(tmp_path):
    torch.manual_seed(0)
    fp32 = randomize_(SegGPT(vit_tiny()), std=0.1).eval()
    save_native(fp32, tmp_path / "tiny.safetensors")
    linears = sum(isinstance(mod, nn.Linear) for mod in fp32.modules())
    m = load_model(tmp_path / "tiny.safetensors", device="cpu", dtype="int8")
    assert sum(isinstance(mod, Int8Linear) for mod in m.modules()) == linears
    assert not any(isinstance(mod, nn.Linear) for mod in m.modules())
    compute = int8_compute_dtype()
    assert all(p.dtype is compute for p in m.parameters())
    images, masks = _ensemble_inputs(fp32, 2, 1)
    with torch.no_grad():
        ref = fp32(images, masks, fp32.query_mask(), torch.zeros(2), query_only=True)
        out = m(images.to(compute), masks.to(compute), m.query_mask(), torch.zeros(2), query_only=True)
    diff = (out.float() - ref).abs().mean().item()
    assert 0 < diff < 0.05, diff  # the bound, normalised space
    with pytest.raises(ValueError, match="quantised to int8; load it again"):
        to_precision(m, "cpu", "fp32")


def test_lite_model_int8_is_close_to_float32_and_shares_the_ensemble():
    fp32 = _tiny_lite()
    images, masks = _ensemble_inputs(fp32, 2, 3)
    st = torch.zeros(6, dtype=torch.long)
    with torch.no_grad():
        ref = fp32(images, masks, fp32.query_mask(), st, feature_ensemble=True, num_prompts=3, query_only=True)
        m = to_precision(_tiny_lite(), "cpu", "int8")
        c = int8_compute_dtype()
        full = m(images.to(c), masks.to(c), m.query_mask(), st, feature_ensemble=True, num_prompts=3, query_only=True)
        out, _ = _shared(m, images.to(c), masks.to(c), 3)
    assert is_quantized(m)
    assert (full[::3].float() - ref[::3]).abs().mean() < 0.05
    torch.testing.assert_close(out.float(), full[::3].float(), rtol=0, atol=0.05)


def test_int8_predictor_paints_like_float32():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(3)]
    masks = [(rng.random((40, 50)) > 0.5).astype(np.uint8) for _ in range(3)]
    targets = [rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(2)]
    model = randomize_(SegGPT(vit_tiny()), std=0.1).eval()
    raws = {}
    for dtype in ("fp32", "int8"):
        p = SegGPTPredictor(model, dtype=dtype)  # int8 quantises the model in place, after fp32 ran
        p.set_prompts(imgs, masks)  # three examples: the feature ensemble
        q, _ = p.prepare_targets(targets)
        raws[dtype] = p.paint(q)
        if dtype == "int8":
            assert p.dtype is int8_compute_dtype() and is_quantized(p.model)
            torch.testing.assert_close(raws[dtype], p.paint(q, cached=False), rtol=0, atol=2.0)
    diff = (raws["int8"] - raws["fp32"]).abs().mean().item()
    assert 0 < diff < 2.0, diff  # of 255


def test_int8_names_and_devices(monkeypatch, capsys, tmp_path):
    from seggpt.cli import main

    assert parse_dtype("int8") is torch.int8 and parse_dtype(torch.int8, "cpu") is torch.int8
    with pytest.raises(ValueError, match=r"^dtype int8 \(dynamic int8 quantisation\) runs on the CPU only"):
        parse_dtype("int8", "cuda:0")
    # A machine with a GPU: --dtype int8 with the GPU is one line, before anything is read.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.chdir(tmp_path)
    argv = ["segment", "--prompt", "a.jpg", "a.png", "--out", "o", "t.jpg", "--dtype", "int8"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("seggpt segment: error: dtype int8 (dynamic int8 quantisation) runs on the CPU only, not on")
    assert err.count("\n") == 1 and "pass device cpu" in err
    assert list(tmp_path.iterdir()) == []


def test_eval_cli_runs_in_int8(tmp_path):
    from eval_fixtures import write_fss
    from seggpt.cli import main

    torch.manual_seed(0)
    save_native(randomize_(SegGPT(vit_tiny()), std=0.1), tmp_path / "tiny.safetensors")
    data = write_fss(tmp_path / "fss")
    out = tmp_path / "fss.json"
    argv = ["eval", "fss1000", "--data", str(data), "--weights", str(tmp_path / "tiny.safetensors")]
    assert main(argv + ["--shots", "2", "--dtype", "int8", "--device", "cpu", "--json", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["run"]["dtype"] == "int8" and 0.0 <= report["metrics"]["mIoU"] <= 100.0


def test_ensemble_flop_bound_counts_the_shared_work():
    """The benchmark's bound for the shared ensemble: with one prompt it is exactly a one-prompt forward's FLOPs;
    with more, each prompt adds its own prompt half and attention but not the query half's work again, so the
    ratio falls with P and stays above 1/P (a whole forward per target)."""
    bench = load_script("model_forward")
    ratios = [bench.ensemble_flop_ratio("vit_tiny", p) for p in (1, 2, 4)]
    assert ratios[0] == pytest.approx(1.0)
    assert 1 / 2 < ratios[1] < 1 and 1 / 4 < ratios[2] < ratios[1]


@pytest.mark.parametrize("onednn", [True, False])
def test_int8_without_its_fast_kernel_warns(monkeypatch, caplog, onednn):
    """On a CPU without VNNI int8 computes its products as float32 matmuls, no faster than fp32: say so once."""
    from seggpt.modeling import quant

    monkeypatch.setattr(quant, "_onednn_available", lambda: onednn)
    with caplog.at_level("WARNING", logger="seggpt.checkpoint"):
        to_precision(SegGPT(vit_tiny()).eval(), "cpu", "int8")
    warned = [r for r in caplog.records if "no faster than fp32" in r.getMessage()]
    assert len(warned) == (0 if onednn else 1)


# The relative position bias, expanded a chunk at a time on the CPU ---------------------------------------------
def test_rel_pos_bias_terms_equal_the_definition():
    """bias[q, k] = q . Rh[qh - kh + Hp - 1] + q . Rw[qw - kw + Wp - 1], written out with loops, for every query of
    the lower rows (first_row) and every key of the grid, and for a part of the key rows."""
    from seggpt.modeling.layers import rel_pos_bias

    g = torch.Generator().manual_seed(0)
    hp, wp, hd, first = 4, 3, 5, 2
    q = torch.randn(2, 2, (hp - first) * wp, hd, generator=g, dtype=torch.float64)
    rh, rw = (
        torch.randn(2 * hp - 1, hd, generator=g, dtype=torch.float64),
        torch.randn(2 * wp - 1, hd, generator=g, dtype=torch.float64),
    )
    bias = rel_pos_bias(q, rh, rw, (hp, wp), first_row=first)
    want = torch.empty(2, 2, (hp - first) * wp, hp * wp, dtype=torch.float64)
    for i in range((hp - first) * wp):
        qh, qw = first + i // wp, i % wp
        for j in range(hp * wp):
            kh, kw = j // wp, j % wp
            want[:, :, i, j] = q[:, :, i] @ rh[qh - kh + hp - 1] + q[:, :, i] @ rw[qw - kw + wp - 1]
    torch.testing.assert_close(bias.dense(), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(bias.key_rows(1, 3).dense(), want[..., wp : 3 * wp], rtol=0, atol=1e-12)


def test_bias_chunks_cover_every_canvas_and_head_once():
    from seggpt.modeling.layers import RelBias

    bias = RelBias(torch.zeros(3, 2, 16, 8), torch.zeros(3, 2, 16, 4))  # 2 x 16 x 32 = 1024 elements a canvas
    for budget, n in [(1, 6), (512, 6), (1024, 3), (2048, 2), (1 << 20, 1)]:
        seen = torch.zeros(3, 2, dtype=torch.long)
        chunks = bias.chunks(budget)
        for index in chunks:
            seen[index] += 1
        assert len(chunks) == n and (seen == 1).all(), (budget, chunks)


@pytest.mark.parametrize("budget", [1, 2048, 4096], ids=["a-head", "a-canvas", "two-canvases"])
def test_attention_in_chunks_equals_one_call(monkeypatch, budget):
    """The forward and the shared ensemble with the bias expanded a head, a canvas or two canvases at a time
    (vit_tiny: 2 heads, 8x4 tokens, 2 x 32 x 32 bias elements a canvas) answer as with the whole bias at once."""
    import seggpt.modeling.layers as layers

    torch.manual_seed(0)
    m = randomize_(SegGPT(vit_tiny()), std=0.2).eval()
    t, p = 2, 3
    images, masks = _ensemble_inputs(m, t, p)
    monkeypatch.setattr(layers, "BIAS_CHUNK", 1 << 40)
    with torch.no_grad():
        ref, _, _ = _released(m, images, masks, p, False)
        ref_shared, _ = _shared(m, images, masks, p, False)
        monkeypatch.setattr(layers, "BIAS_CHUNK", budget)
        out, _, _ = _released(m, images, masks, p, False)
        shared, _ = _shared(m, images, masks, p, False)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(shared, ref_shared, rtol=0, atol=1e-6)


@pytest.mark.parametrize("budget", [1, 2048], ids=["a-head", "a-canvas"])
def test_attention_in_chunks_trains_as_one_call(monkeypatch, budget):
    """Gradients through the chunked attention (training on the CPU) equal those of one call."""
    import seggpt.modeling.layers as layers

    torch.manual_seed(0)
    m = randomize_(SegGPT(vit_tiny()), std=0.2).train()
    images, masks = _ensemble_inputs(m, 2, 1)
    st = torch.zeros(images.shape[0], dtype=torch.long)

    def grads() -> list[torch.Tensor]:
        m.zero_grad()
        _, loss = m(images, masks, m.query_mask(), st, return_loss=True)
        loss.backward()
        return [p.grad.clone() for p in m.parameters() if p.grad is not None]

    monkeypatch.setattr(layers, "BIAS_CHUNK", 1 << 40)
    whole = grads()
    monkeypatch.setattr(layers, "BIAS_CHUNK", budget)
    chunked = grads()
    assert len(whole) == len(chunked) > 0
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
