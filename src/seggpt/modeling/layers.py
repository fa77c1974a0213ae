"""Building blocks of the SegGPT encoder and decoder.

Module and parameter names equal the released checkpoint's keys (``blocks.i.attn.qkv``, ``decoder_pred.1``),
so loading it is a strict ``load_state_dict``. Tokens stay in a (B, Hp, Wp, C) layout throughout, as in the
released code, because the feature ensemble and the relative position terms both address rows of the grid.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map. Its parameters are plain ``weight`` / ``bias``,
    stored as ``decoder_pred.1.*`` in the released checkpoint."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class StemLayer(nn.Module):
    """One stride-2 step of a convolutional stem: 3x3 conv, channel LayerNorm, GELU."""

    def __init__(self, in_chans: int, out_chans: int, eps: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=2, padding=1)
        self.norm = LayerNorm2d(out_chans, eps=eps)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class ResConv(nn.Module):
    """A residual 3x3 conv at constant resolution: x + GELU(LayerNorm(conv(x)))."""

    def __init__(self, chans: int, eps: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(chans, chans, kernel_size=3, padding=1)
        self.norm = LayerNorm2d(chans, eps=eps)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.act(self.norm(self.conv(x)))


class ConvBranch(nn.Module):
    """A small CNN beside the linear patch projection whose output is added to the tokens.

    One stage per halving (``len(channels)`` = log2 of the patch size): a stride-2 3x3 conv, then ``depth - 1``
    residual 3x3 convs. Its receptive field spans several patches, so a token can carry the outline of the object
    it lies on, which a from-scratch ViT of the first embedded model's size did not learn on its budget
    (docs/embedded-model-history.md). The output conv starts at zero: a branch added to a trained model leaves it
    exactly as it was until training moves it.
    """

    def __init__(self, in_chans: int, channels: tuple[int, ...], depth: int, embed_dim: int, eps: float) -> None:
        super().__init__()
        chans = (in_chans, *channels)
        self.stages = nn.ModuleList(
            nn.Sequential(StemLayer(a, b, eps), *(ResConv(b, eps) for _ in range(depth - 1)))
            for a, b in zip(chans[:-1], chans[1:], strict=True)
        )
        self.out = nn.Conv2d(chans[-1], embed_dim, kernel_size=1)

    def reset_parameters(self) -> None:
        """He-initialise the stages' convs and zero the output conv (training from scratch)."""
        for m in self.stages.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.out.weight)  # a new branch leaves the tokens as they were
        nn.init.zeros_(self.out.bias)

    def features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, channels[-1], H / 2**n, W / 2**n): the last stage, before the output conv."""
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x))


class PatchEmbed(nn.Module):
    """Image to tokens: (B, 3, H, W) -> (B, Hp, Wp, C).

    Without a stem (the released model), non-overlapping patches through one linear projection. With
    ``stem_channels`` (c1, .., cn), n stride-2 3x3 convolutions first (Xiao et al. 2021, "Early convolutions
    help transformers see better"), then the projection over the remaining patch_size / 2**n pixels, so each token
    sees edges and corners that reach over its patch border (on the first embedded model's budget it learned
    slower: docs/embedded-model-history.md). Apply it to one image at a time: the stem's receptive field reaches
    across neighbouring pixels, so a canvas of two stacked images must be split first (``SegGPT.embed_canvas`` does).
    """

    def __init__(
        self,
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        stem_channels: tuple[int, ...] = (),
        eps: float = 1e-6,
        branch_channels: tuple[int, ...] = (),
        branch_depth: int = 2,
    ) -> None:
        super().__init__()
        chans = (in_chans, *stem_channels)
        self.stem = nn.Sequential(*(StemLayer(a, b, eps) for a, b in zip(chans[:-1], chans[1:], strict=True)))
        rest = patch_size >> len(stem_channels)
        self.proj = nn.Conv2d(chans[-1], embed_dim, kernel_size=rest, stride=rest)
        self.branch = ConvBranch(in_chans, branch_channels, branch_depth, embed_dim, eps) if branch_channels else None

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.proj(self.stem(x))
        if self.branch is not None:
            tokens = tokens + self.branch(x)
        return tokens.permute(0, 2, 3, 1)  # B C Hp Wp -> B Hp Wp C


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p`` in training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def resize_rel_pos(rel_pos: Tensor, length: int) -> Tensor:
    """Linearly resize a relative position table (L, C) to (length, C), as ViTDet does for a new grid."""
    if rel_pos.shape[0] == length:
        return rel_pos
    # At least float32 (half precision interpolates coarsely), float64 kept.
    resized = F.interpolate(
        rel_pos.T[None].to(torch.promote_types(rel_pos.dtype, torch.float32)), size=length, mode="linear"
    )
    return resized[0].T.to(rel_pos.dtype)


def get_rel_pos(q_size: int, k_size: int, rel_pos: Tensor) -> Tensor:
    """Relative position embeddings for every (query, key) offset along one axis: (q_size, k_size, C)."""
    rel_pos = resize_rel_pos(rel_pos, 2 * max(q_size, k_size) - 1)
    # Scale coordinates of the shorter side so both span the same range (equal sizes here: plain q - k).
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


# Bias elements expanded at once in a CPU attention call (see RelBias.chunks): about 8 MB in float32. A bias this
# size stays in cache between being written and SDPA reading it, and its allocation is reused instead of faulted
# in afresh; the whole (B, nh, L, L) bias of the embedded model is 50 MB. One attention layer of the embedded
# model (8 canvases, 6 heads, 512 tokens, two threads of an AVX2 CPU): 32 ms in chunks against 58 ms with the whole
# bias built by a one-hot matmul; the same answers to the bit (docs/model.md).
BIAS_CHUNK = 1 << 21


class RelBias(NamedTuple):
    """The decomposed relative position terms, unexpanded: bias[..., q, (kh, kw)] = rows[..., q, kh] + cols[..., q, kw].

    rows: (B, nh, Lq, Hk) and cols: (B, nh, Lq, Wk), keys a grid of Hk x Wk in row-major order. Attention
    expands it (:meth:`dense`) a few canvases at a time on the CPU (:meth:`chunks`), all at once elsewhere.
    """

    rows: Tensor
    cols: Tensor

    def dense(self) -> Tensor:
        """The bias (B, nh, Lq, Hk * Wk): each element one sum, rounded once in the dtype of the terms."""
        b, nh, lq, hk = self.rows.shape
        return (self.rows[..., :, None] + self.cols[..., None, :]).reshape(b, nh, lq, hk * self.cols.shape[-1])

    def key_rows(self, start: int, stop: int) -> RelBias:
        """The bias for the keys of grid rows start .. stop - 1 only."""
        return RelBias(self.rows[..., start:stop], self.cols)

    def repeat_interleave(self, repeats: int) -> RelBias:
        return RelBias(self.rows.repeat_interleave(repeats, dim=0), self.cols.repeat_interleave(repeats, dim=0))

    def chunks(self, budget: int | None = None) -> list[tuple[slice, slice]]:
        """(batch, head) slices that cover the bias with about ``budget`` (:data:`BIAS_CHUNK`) elements each:
        whole canvases where one fits, else a few heads of one canvas."""
        budget = BIAS_CHUNK if budget is None else budget
        b, nh, lq, hk = self.rows.shape
        per_head = lq * hk * self.cols.shape[-1]
        if per_head * nh <= budget:
            step = max(1, budget // (per_head * nh))
            return [(slice(i, i + step), slice(None)) for i in range(0, b, step)]
        step = max(1, budget // per_head)
        return [(slice(i, i + 1), slice(j, j + step)) for i in range(b) for j in range(0, nh, step)]

    def part(self, index: tuple[slice, slice]) -> RelBias:
        """The bias of the canvases and heads ``index`` picks (one of :meth:`chunks`)."""
        return RelBias(self.rows[index], self.cols[index])


def rel_pos_bias(q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor, size: tuple[int, int], first_row: int = 0) -> RelBias:
    """Decomposed relative position terms of an attention bias.

    Args:
        q: unscaled queries (B, nh, Hq * Wq, hd) of the grid rows first_row .. first_row + Hq - 1 (all of them
            by default; a part of them when the query half is computed apart, :meth:`Attention.forward_shared`).
        rel_pos_h, rel_pos_w: tables (2 * Hp - 1, hd) and (2 * Wp - 1, hd).
        size: the whole grid (Hp, Wp); keys span all of it, queries are Wq = Wp wide.
        first_row: the grid row of q's first row.

    Returns:
        The terms of bias[q, k] = q . Rh[qh - kh] + q . Rw[qw - kw] (B, nh, Hq * Wq, Hp * Wp), unexpanded.
    """
    h, w = size
    b, nh, lq, hd = q.shape
    hq = lq // w
    rh = get_rel_pos(h, h, rel_pos_h)[first_row : first_row + hq].to(q.dtype)  # Hq Hk hd
    rw = get_rel_pos(w, w, rel_pos_w).to(q.dtype)  # Wq Wk hd
    r_q = q.reshape(b, nh, hq, w, hd)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh)  # B nh Hq Wq Hk
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw)  # B nh Hq Wq Wk
    return RelBias(rel_h.reshape(b, nh, lq, h), rel_w.reshape(b, nh, lq, w))


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) grid with decomposed relative position terms.

    ``impl`` picks the kernel: "sdpa" (``scaled_dot_product_attention`` with the relative terms as a bias,
    the default) or "eager" (the explicit softmax(QK^T) V, kept as a reference and for debugging).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool,
        use_rel_pos: bool,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        self.impl = "sdpa"
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        # B H W 3C -> 3 B nh L hd
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w)) if self.use_rel_pos else None
        out = self._attend(q, k, v, bias)
        out = out.transpose(1, 2).reshape(b, h, w, c)  # B nh L hd -> B H W C
        return self.proj(out)

    def forward_shared(self, prompt: Tensor, query: Tensor, num_prompts: int) -> tuple[Tensor, Tensor]:
        """Attention of P canvases that share their query half, with the feature ensemble on that half.

        Equals :meth:`forward` on the P whole canvases followed by :func:`ensemble_query_half`, to float
        rounding, with the query half's work done once where it is the same in the P canvases: its qkv, its
        relative position terms, its attention over the query half's own keys, and the projection (after the
        mean over P instead of before: it is affine). Only its attention over each canvas's prompt keys runs per
        canvas; the two parts of its softmax are merged by their log-sum-exp. For P = 4 that is 13/16 of the
        attention products of four canvases and 5/8 of their linear work (ViT-L fp32: 19.3 s against 25.7 s
        when the query rows attend to all keys of each canvas at once).

        Args:
            prompt: normed prompt halves (G P, Hp/2, Wp, C), G groups of P, P fastest.
            query: normed query halves (G, Hp/2, Wp, C), one per group.
            num_prompts: P.

        Returns:
            The prompt halves' output (G P, Hp/2, Wp, C) and the query halves' output averaged over P (G, ...).
        """
        gp, hh, w, c = prompt.shape
        g, p, nh = query.shape[0], num_prompts, self.num_heads
        qkv_p = self.qkv(prompt).reshape(gp, hh * w, 3, nh, -1).permute(2, 0, 3, 1, 4)  # 3 GP nh L/2 hd
        qkv_q = self.qkv(query).reshape(g, hh * w, 3, nh, -1).permute(2, 0, 3, 1, 4)  # 3 G nh L/2 hd
        bias_p = bias_q = None
        if self.use_rel_pos:
            size = (2 * hh, w)
            bias_p = rel_pos_bias(qkv_p[0], self.rel_pos_h, self.rel_pos_w, size)  # GP nh L/2 L
            bias_q = rel_pos_bias(qkv_q[0], self.rel_pos_h, self.rel_pos_w, size, first_row=hh)  # G nh L/2 L
        # Prompt rows attend to their canvas's keys: its prompt half, then the group's query half.
        k, v = (torch.cat([a, b.repeat_interleave(p, dim=0)], dim=2) for a, b in zip(qkv_p[1:], qkv_q[1:], strict=True))
        out_p = self._attend(qkv_p[0], k, v, bias_p)  # GP nh L/2 hd
        # Query rows: softmax over [prompt keys of the canvas, query keys] in two parts merged by their
        # log-sum-exp, so the part over the query keys (equal in the P canvases) runs once per group.
        half = (None, None) if bias_q is None else (bias_q.key_rows(0, hh), bias_q.key_rows(hh, 2 * hh))
        q_rep = qkv_q[0].repeat_interleave(p, dim=0)
        bias_qp = None if half[0] is None else half[0].repeat_interleave(p)
        out_a, lse_a = self._attend(q_rep, qkv_p[1], qkv_p[2], bias_qp, with_lse=True)  # GP nh L/2 hd, GP nh L/2
        out_b, lse_b = self._attend(qkv_q[0], qkv_q[1], qkv_q[2], half[1], with_lse=True)  # G nh L/2 hd, G nh L/2
        # out = w * out_a + (1 - w) * out_b with w = e^a / (e^a + e^b); the ensemble's mean over P of it.
        wt = torch.sigmoid(lse_a.float() - lse_b.float().repeat_interleave(p, dim=0))[..., None]  # GP nh L/2 1
        mixed = (out_a.float() * wt).reshape(g, p, *out_a.shape[1:]).mean(1)
        out_q = (mixed + out_b.float() * (1 - wt).reshape(g, p, *wt.shape[1:]).mean(1)).to(out_b.dtype)
        out_p = out_p.transpose(1, 2).reshape(gp, hh, w, c)  # GP nh L/2 hd -> GP Hp/2 Wp C
        out_q = out_q.transpose(1, 2).reshape(g, hh, w, c)
        return self.proj(out_p), self.proj(out_q)

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, bias: RelBias | None, with_lse: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """softmax(q k^T * scale + bias) v for (B, nh, Lq, hd) q and (B, nh, Lk, hd) k, v, by ``impl``; with
        ``with_lse`` also the log-sum-exp of each row's logits (B, nh, Lq), float32: on the CPU from the fused
        kernel that SDPA runs there, elsewhere from the explicit softmax. On the CPU the bias is expanded and
        attended a chunk of canvases (or heads) at a time (:data:`BIAS_CHUNK`); the results are the same."""
        if self.impl not in ("eager", "sdpa"):
            raise ValueError(f"unknown attention impl {self.impl!r}; use 'sdpa' or 'eager'")
        if bias is None or q.device.type != "cpu":
            return self._attend_dense(q, k, v, None if bias is None else bias.dense(), with_lse)
        index = bias.chunks()
        parts = [self._attend_dense(q[i], k[i], v[i], bias.part(i).dense(), with_lse) for i in index]
        if len(parts) == 1:
            return parts[0]
        out = self._merge(q, [p[0] if with_lse else p for p in parts], index)
        return (out, self._merge(q[..., 0], [p[1] for p in parts], index)) if with_lse else out

    @staticmethod
    def _merge(like: Tensor, parts: list[Tensor], index: list[tuple[slice, slice]]) -> Tensor:
        """The chunks' results laid out as one (B, nh, ...) tensor."""
        out = like.new_empty(like.shape[:2] + parts[0].shape[2:], dtype=parts[0].dtype)
        for i, part in zip(index, parts, strict=True):
            out[i] = part
        return out

    def _attend_dense(
        self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, with_lse: bool
    ) -> Tensor | tuple[Tensor, Tensor]:
        if self.impl == "sdpa" and not (with_lse and q.device.type != "cpu"):
            if with_lse:
                out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=bias)
                return out, lse.float()
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        if bias is not None:
            logits = logits + bias
        logits = logits.float()
        out = logits.softmax(dim=-1).to(q.dtype) @ v
        return (out, logits.logsumexp(dim=-1)) if with_lse else out


def window_partition(x: Tensor, ws: int) -> tuple[Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nW, ws, ws, C), zero-padding H and W up to multiples of ws."""
    b, h, w, c = x.shape
    ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws, ws, c), (hp, wp)


def window_unpartition(windows: Tensor, ws: int, padded: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws, ws, C) -> (B, H, W, C)."""
    hp, wp = padded
    h, w = size
    b = windows.shape[0] // (hp * wp // ws // ws)
    x = windows.view(b, hp // ws, wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w].contiguous()


def ensemble_query_half(x: Tensor, groups: int, num_prompts: int) -> Tensor:
    """Feature ensemble: average the query half (lower rows) over the prompts of each group.

    Args:
        x: attention output (B, Hp, Wp, C) with B = groups * T * P laid out as (groups, T, P): ``groups`` is 2
            while the image and mask streams are separate samples (blocks 0..merge_index), else 1; T queries;
            P prompts per query, P fastest.
        num_prompts: P.

    Returns:
        x with rows Hp/2.. replaced by their mean over P; the prompt rows are untouched.
    """
    if num_prompts <= 1:
        return x
    b, hp, wp, c = x.shape
    prompt, query = x.split(hp // 2, dim=1)
    query = query.reshape(groups, b // groups // num_prompts, num_prompts, -1)
    query = query.mean(dim=2, keepdim=True).expand_as(query).reshape(prompt.shape[0], -1, wp, c)
    return torch.cat([prompt, query], dim=1)


class Block(nn.Module):
    """Pre-norm transformer block. ``window_size`` 0 means global attention (every block of the release)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        eps: float,
        drop_path: float,
        use_rel_pos: bool,
        window_size: int,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos, attn_size)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: Tensor, groups: int = 1, num_prompts: int = 1) -> Tensor:
        """x: (B, Hp, Wp, C). With num_prompts > 1 the feature ensemble is applied (see
        :func:`ensemble_query_half`) after attention and before the residual add, as in the released code."""
        y = self.norm1(x)
        if self.window_size > 0:
            size = y.shape[1:3]
            y, padded = window_partition(y, self.window_size)
            y = window_unpartition(self.attn(y), self.window_size, padded, size)
        else:
            y = self.attn(y)
        y = ensemble_query_half(y, groups, num_prompts)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_shared(self, prompt: Tensor, query: Tensor, num_prompts: int) -> tuple[Tensor, Tensor]:
        """:meth:`forward` with the feature ensemble on canvases split into their halves, the query half once per
        group of P (the ensemble keeps it equal across the group): prompt (G P, Hp/2, Wp, C), query
        (G, Hp/2, Wp, C) -> the same two after the block. Inference only (drop path is per canvas in training)."""
        if self.window_size > 0:  # windows cut across the halves' shapes: run the P whole canvases
            p, hh = num_prompts, prompt.shape[1]
            prompt, query = self(torch.cat([prompt, query.repeat_interleave(p, dim=0)], dim=1), 1, p).split(hh, 1)
            return prompt, query[::p]
        y_p, y_q = self.attn.forward_shared(self.norm1(prompt), self.norm1(query), num_prompts)
        prompt, query = prompt + y_p, query + y_q
        return prompt + self.mlp(self.norm2(prompt)), query + self.mlp(self.norm2(query))


class FuseUp(nn.Module):
    """One step of the FPN decoder: upsample x2 (bilinear), concatenate the image features of that stride (and
    any ``extra`` maps, resized to it), 3x3 conv, channel LayerNorm, GELU."""

    def __init__(self, in_chans: int, skip_chans: int, out_chans: int, eps: float, extra_chans: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans + skip_chans + extra_chans, out_chans, kernel_size=3, padding=1)
        self.norm = LayerNorm2d(out_chans, eps=eps)
        self.act = nn.GELU()

    def forward(self, x: Tensor, skip: Tensor, extra: Tensor | None = None) -> Tensor:
        size = skip.shape[-2:]
        parts = [F.interpolate(x, size=size, mode="bilinear", align_corners=False), skip.to(x.dtype)]
        if extra is not None:
            if extra.shape[-2:] != size:
                extra = F.interpolate(extra, size=size, mode="bilinear", align_corners=False)
            parts.append(extra.to(x.dtype))
        return self.act(self.norm(self.conv(torch.cat(parts, dim=1))))


class FPNDecoder(nn.Module):
    """Tokens at stride 16 -> painted pixels, through the image encoder's stride-8 and stride-4 features.

    Each image of the canvas is decoded on its own (the example and the query are different pictures), so
    decoding only the query is exact. The 3-channel answer at stride 4 is upsampled x4 bilinearly. With
    ``prior_chans`` both steps also read a stride-8 prior map (the correspondence prior), upsampled to stride 4
    for the second, times ``prior_gain``: its weights start at zero in a trained model, and the gain makes them
    learn that many times faster than the rest (AdamW moves every weight by about the learning rate).
    """

    def __init__(
        self,
        in_chans: int,
        skip_chans: tuple[int, int],
        dims: tuple[int, int, int],
        eps: float,
        prior_chans: int = 0,
        prior_gain: float = 1.0,
    ) -> None:
        super().__init__()
        s4, s8 = skip_chans
        self.prior_chans, self.prior_gain = prior_chans, prior_gain
        self.fuse8 = FuseUp(dims[0], s8, dims[1], eps, prior_chans)
        self.fuse4 = FuseUp(dims[1], s4, dims[2], eps, prior_chans)
        self.head = nn.Conv2d(dims[2], 3, kernel_size=1)

    def forward(self, x: Tensor, skips: list[Tensor], prior: Tensor | None = None) -> Tensor:
        """x: (N, dims[0], h/16, w/16); skips: [(N, s4, h/4, w/4), (N, s8, h/8, w/8)]; prior: (N, prior_chans,
        h/8, w/8), or None for none found (zeros) -> (N, 3, h, w)."""
        s4, s8 = skips[:2]
        if self.prior_chans and prior is None:
            prior = s8.new_zeros(s8.shape[0], self.prior_chans, *s8.shape[-2:])
        elif prior is not None and self.prior_gain != 1.0:
            prior = prior * self.prior_gain
        x = self.fuse4(self.fuse8(x, s8, prior), s4, prior)
        out = self.head(x)
        return F.interpolate(out, scale_factor=4, mode="bilinear", align_corners=False)
