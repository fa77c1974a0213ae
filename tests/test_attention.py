"""Attention with decomposed relative position terms: the CPU kernel that never builds the whole bias, against a
float64 softmax written out here, and the paths that must not take it."""

from __future__ import annotations

import pytest
import torch

from seggpt.modeling import layers
from seggpt.modeling.layers import Attention, RelTerms, attend_rel_terms


def _reference(q, k, v, terms, scale):
    """softmax(q k^T scale + h[q, kh] + w[q, kw]) v and the rows' log-sum-exp, in float64, by broadcasting."""
    q, k, v, th, tw = (t.double() for t in (q, k, v, terms.h, terms.w))
    b, nh, lq, _ = q.shape
    bias = (th[..., :, None] + tw[..., None, :]).reshape(b, nh, lq, -1)
    logits = q @ k.transpose(-2, -1) * scale + bias
    return logits.softmax(-1) @ v, logits.logsumexp(-1)


@pytest.mark.parametrize("chunk", [1, 300, 1 << 19])  # a head at a time, a few, all at once
def test_kernel_equals_the_float64_softmax(monkeypatch, chunk):
    monkeypatch.setattr(layers, "CPU_ATTENTION_CHUNK", chunk)
    g = torch.Generator().manual_seed(0)
    b, nh, hk, wk, lq, hd = 3, 2, 6, 4, 10, 8  # a non-square key grid, fewer query rows than keys
    q, k, v = (torch.randn(b, nh, n, hd, generator=g) for n in (lq, hk * wk, hk * wk))
    terms = RelTerms(torch.randn(b, nh, lq, hk, generator=g) * 3, torch.randn(b, nh, lq, wk, generator=g) * 3)
    out, lse = attend_rel_terms(q, k, v, terms, 0.35, with_lse=True)
    ref, ref_lse = _reference(q, k, v, terms, 0.35)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-6)
    torch.testing.assert_close(lse.double(), ref_lse, rtol=0, atol=2e-6)
    torch.testing.assert_close(attend_rel_terms(q, k, v, terms, 0.35), out, rtol=0, atol=0)
    # The dense bias of the other paths is the same sum.
    dense = terms.dense()
    torch.testing.assert_close(dense, (terms.h[..., :, None] + terms.w[..., None, :]).reshape(b, nh, lq, -1))
    torch.testing.assert_close(terms.key_rows(2, 5).dense(), dense.reshape(b, nh, lq, hk, wk)[..., 2:5, :].flatten(3))


def test_kernel_rejects_terms_of_another_grid():
    q, kv, t = torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 8, 2), torch.zeros(1, 1, 4, 3)
    with pytest.raises(ValueError, match="3x3 key grid, but 8 keys"):
        attend_rel_terms(q, kv, kv, RelTerms(t, t), 1.0)


def _attention():
    torch.manual_seed(1)
    a = Attention(32, 4, True, True, (6, 4))
    with torch.no_grad():
        a.rel_pos_h.normal_(0, 1.0)
        a.rel_pos_w.normal_(0, 1.0)
    return a


def test_inference_takes_the_kernel_and_matches_the_fused_path(monkeypatch):
    a, x = _attention().eval(), torch.randn(2, 6, 4, 32)
    calls = []
    kernel = layers.attend_rel_terms
    monkeypatch.setattr(layers, "attend_rel_terms", lambda *args, **kw: calls.append(1) or kernel(*args, **kw))
    with torch.no_grad():
        fast = a(x)
        monkeypatch.setattr(layers, "_rel_terms_kernel_applies", lambda q: False)
        fused = a(x)  # scaled_dot_product_attention with the whole bias
    assert calls == [1]
    torch.testing.assert_close(fast, fused, rtol=0, atol=2e-6)


def test_training_and_half_precision_keep_the_fused_path(monkeypatch):
    a, x = _attention(), torch.randn(2, 6, 4, 32)
    monkeypatch.setattr(layers, "attend_rel_terms", lambda *args, **kw: pytest.fail("kernel used"))
    a(x).square().sum().backward()  # autograd: the kernel works in place and must not run
    assert a.rel_pos_h.grad.abs().sum() > 0
    with torch.no_grad():
        a.to(torch.bfloat16)(x.to(torch.bfloat16))
