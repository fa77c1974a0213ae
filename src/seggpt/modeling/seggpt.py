"""The SegGPT model: embeddings, a two-stream-then-merged ViT encoder, and a per-pixel decoder.

Reads top-down: embeddings, encoder, decoder, loss, forward. Shapes use B (samples), P (prompts per query),
T (queries), Hp/Wp (token grid of the whole canvas), C (width).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from seggpt.config import SegGPTConfig
from seggpt.modeling.efficientnet import EfficientNetLite0
from seggpt.modeling.layers import Block, FPNDecoder, LayerNorm2d, PatchEmbed

SEMANTIC, INSTANCE = 0, 1  # values of seg_type
# Channels of the FPN decoder at strides 16 and 8 (its stride-4 width is config.decoder_embed_dim).
FPN_DIMS = (128, 64)
# EfficientNet-Lite was trained on pixels scaled to [-1, 1] ((x - 0.5) / 0.5 of [0, 1]); the canvases are in
# ImageNet mean/std space. x_lite = x * (2 std) + (2 mean - 1) converts one into the other.
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The correspondence prior (config.fine_prior): each query pixel at stride 8 reads the painted colours of its
# PRIOR_TOPK most similar example pixels, softmax-weighted over cosine similarity at temperature PRIOR_TAU.
# Its PRIOR_CHANS maps: that colour (3, normalised space) and how much of the weight found a pixel to read (1).
PRIOR_TOPK, PRIOR_TAU, PRIOR_CHANS = 10, 0.1, 4
# The decoder reads the prior times PRIOR_GAIN (layers.FPNDecoder): its weights, zero in a model it is added to,
# then learn ten times faster than the decoder's others. With a gain of 1 they stayed at a fifteenth of the
# others' size in 300 steps (docs/embedded-model.md).
PRIOR_GAIN = 10.0
# Similarities computed at once in one prior (query pixels x example pixels); more are taken in row chunks.
PRIOR_CHUNK = 1 << 24


def resize_abs_pos(pos_embed: Tensor, cls_slot: bool, grid: tuple[int, int]) -> Tensor:
    """The pre-trained square position table (1, [1 +] S*S, C) resized bicubically to (1, Hp, Wp, C)."""
    if cls_slot:
        pos_embed = pos_embed[:, 1:]
    side = math.isqrt(pos_embed.shape[1])
    table = pos_embed.reshape(1, side, side, -1)
    if (side, side) == tuple(grid):
        return table
    resized = F.interpolate(table.permute(0, 3, 1, 2).float(), size=grid, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).to(pos_embed.dtype)


def match_features(s8: Tensor, s16: Tensor) -> Tensor:
    """Unit per-pixel descriptors at stride 8 for the correspondence prior: the image encoder's stride-8
    features and its stride-16 features (bilinearly upsampled), each unit-normed, concatenated, unit-normed.
    The fine features place a thing; the coarse ones say what it is. Not trained through (detached)."""
    s8, s16 = s8.detach().float(), s16.detach().float()
    up = F.interpolate(s16, size=s8.shape[-2:], mode="bilinear", align_corners=False)
    return F.normalize(torch.cat([F.normalize(s8, dim=1), F.normalize(up, dim=1)], dim=1), dim=1)


def correspondence_prior(query: Tensor, keys: Tensor, values: Tensor, valid: Tensor | None = None) -> Tensor:
    """What the examples say about each query pixel, read off their best-matching pixels.

    Args:
        query: (N, D, h, w) unit descriptors of N query images (:func:`match_features`).
        keys: (N, K, D) unit descriptors of the example pixels each query reads.
        values: (N, K, 3) the painted mask at those pixels (normalised space).
        valid: optional (N, K) bool: only these pixels may be read (the visible mask patches in training).

    Returns:
        (N, PRIOR_CHANS, h, w) float32: the softmax-weighted colour of the PRIOR_TOPK most similar valid example
        pixels, and the weight that found one (1, or 0 where there was no valid pixel to read).
    """
    n, d, h, w = query.shape
    if keys.shape[0] != n or keys.shape[2] != d or values.shape[:2] != keys.shape[:2]:
        raise ValueError(
            f"prior keys {tuple(keys.shape)} / values {tuple(values.shape)} do not fit {tuple(query.shape)}"
        )
    with torch.autocast(query.device.type, enabled=False):
        q = query.float().flatten(2).transpose(1, 2)  # N hw D
        keys, values = keys.float(), values.float()
        k = min(PRIOR_TOPK, keys.shape[1])
        rows = max(1, PRIOR_CHUNK // max(keys.shape[1], 1))
        out = []
        for start in range(0, h * w, rows):
            sim = q[:, start : start + rows] @ keys.transpose(1, 2)  # N r K
            if valid is not None:
                sim = sim.masked_fill(~valid[:, None, :], -1e4)
            top, idx = sim.topk(k, dim=-1)
            weight = torch.softmax(top / PRIOR_TAU, dim=-1) * (top > -1e3)
            picked = values[torch.arange(n, device=q.device)[:, None, None], idx]  # N r k 3
            out.append(torch.cat([(weight[..., None] * picked).sum(2), weight.sum(-1, keepdim=True)], dim=-1))
        return torch.cat(out, dim=1).transpose(1, 2).reshape(n, PRIOR_CHANS, h, w)


def with_fine_prior(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict of an FPN model without the correspondence prior, made to load into one with it: the two
    decoder convs gain PRIOR_CHANS input channels of zero weight, so the model answers exactly as before."""
    state = dict(state)
    for key in ("decoder_pred.fuse8.conv.weight", "decoder_pred.fuse4.conv.weight"):
        w = state[key]
        state[key] = torch.cat([w, w.new_zeros(w.shape[0], PRIOR_CHANS, *w.shape[2:])], dim=1)
    return state


def _halves(canvas: Tensor) -> Tensor:
    """(B, 3, H, W) canvases -> (2B, 3, H/2, W) images, each sample's example (upper half) before its query."""
    b, c, h, w = canvas.shape
    return canvas.reshape(b, c, 2, h // 2, w).transpose(1, 2).reshape(2 * b, c, h // 2, w)


class SegGPT(nn.Module):
    """SegGPT with the released model's forward contract.

    ``model(images, masks, bool_masked_pos, seg_type)`` takes stacked canvases (example on top, query below)
    in normalised space and returns the predicted mask canvas (B, 3, H, W) in normalised space; its lower half
    is the answer.
    """

    def __init__(self, config: SegGPTConfig) -> None:
        super().__init__()
        self.config = cfg = config
        c = cfg.embed_dim
        self.patch_embed = PatchEmbed(
            cfg.patch_size,
            cfg.in_chans,
            c,
            cfg.stem_channels,
            cfg.layer_norm_eps,
            branch_channels=cfg.branch_channels,
            branch_depth=cfg.branch_depth,
        )
        # A pretrained CNN for the image stream (models of this project; the release has none).
        self.image_encoder = self.image_proj = None
        if cfg.image_encoder:
            self.image_encoder = EfficientNetLite0()
            self.image_proj = nn.Conv2d(self.image_encoder.channels[-1], c, kernel_size=1)
        # (1, 1, 1, C) tokens, broadcast over (B, Hp, Wp).
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, c))
        self.segment_token_x = nn.Parameter(torch.zeros(1, 1, 1, c))  # image stream
        self.segment_token_y = nn.Parameter(torch.zeros(1, 1, 1, c))  # mask stream
        self.type_token_cls = nn.Parameter(torch.zeros(1, 1, 1, c))  # category (semantic) tasks
        self.type_token_ins = nn.Parameter(torch.zeros(1, 1, 1, c))  # instance tasks
        side = cfg.pretrain_img_size // cfg.patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, side * side + int(cfg.pos_embed_cls_slot), c))

        # Stochastic depth rising linearly over depth (plain floats: the model may be built on the meta device).
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(
            Block(
                dim=c,
                num_heads=cfg.num_heads,
                mlp_ratio=cfg.mlp_ratio,
                qkv_bias=cfg.qkv_bias,
                eps=cfg.layer_norm_eps,
                drop_path=dpr[i],
                use_rel_pos=cfg.use_rel_pos,
                window_size=cfg.window_size if cfg.is_windowed(i) else 0,
                input_size=cfg.grid_size,
            )
            for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(c, eps=cfg.layer_norm_eps)

        d = cfg.decoder_embed_dim
        if cfg.decoder == "fpn":
            self.decoder_embed = nn.Linear(c * len(cfg.out_indices), FPN_DIMS[0])
            chans = self.image_encoder.channels
            self.decoder_pred = FPNDecoder(
                FPN_DIMS[0],
                (chans[0], chans[1]),
                (*FPN_DIMS, d),
                cfg.layer_norm_eps,
                prior_chans=PRIOR_CHANS if cfg.fine_prior else 0,
                prior_gain=PRIOR_GAIN,
            )
        else:
            self.decoder_embed = nn.Linear(c * len(cfg.out_indices), cfg.patch_size**2 * d)
            self.decoder_pred = nn.Sequential(
                nn.Conv2d(d, d, kernel_size=3, padding=1),
                LayerNorm2d(d, eps=cfg.layer_norm_eps),
                nn.GELU(),
                nn.Conv2d(d, 3, kernel_size=1),
            )
        self.grad_checkpointing = False
        self.init_weights()

    # Initialisation (training from scratch; loading a checkpoint overwrites all of it) ------------------
    def init_weights(self) -> None:
        for t in (self.segment_token_x, self.segment_token_y, self.type_token_cls, self.type_token_ins):
            nn.init.trunc_normal_(t, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for m in self.patch_embed.stem.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        if self.patch_embed.branch is not None:
            self.patch_embed.branch.reset_parameters()
        if self.config.decoder == "fpn":  # He init for the GELU convs of the FPN decoder
            for m in self.decoder_pred.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        if self.image_proj is not None:  # the encoder itself is loaded from ImageNet weights (train.imagenet)
            nn.init.xavier_uniform_(self.image_proj.weight.flatten(1))
            nn.init.zeros_(self.image_proj.bias)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_attention(self, impl: str) -> None:
        """Pick the attention kernel of every block: "sdpa" (default) or "eager" (reference)."""
        if impl not in ("sdpa", "eager"):
            raise ValueError(f"unknown attention impl {impl!r}; use 'sdpa' or 'eager'")
        for blk in self.blocks:
            blk.attn.impl = impl

    @property
    def num_patches(self) -> int:
        hp, wp = self.config.grid_size
        return hp * wp

    def query_mask(self, device: torch.device | str | None = None) -> Tensor:
        """The inference ``bool_masked_pos``: (1, Hp * Wp), True on the query (lower) half."""
        m = torch.zeros(1, self.num_patches, dtype=torch.bool, device=device)
        m[:, self.num_patches // 2 :] = True
        return m

    # Embeddings ---------------------------------------------------------------------------------------
    def embed(
        self,
        x: Tensor,
        y: Tensor,
        bool_masked_pos: Tensor,
        seg_type: Tensor,
    ) -> Tensor:
        """Token embeddings of both streams from patch-embedded canvases.

        Args:
            x: patch-embedded image canvas (B, Hp, Wp, C).
            y: patch-embedded mask canvas (B, Hp, Wp, C).
            bool_masked_pos: (B or 1, Hp * Wp) bool; True replaces the mask token there.
            seg_type: (B,) or (B, 1) ints, 0 = semantic (category), 1 = instance.

        Returns:
            (2B, Hp, Wp, C): the image stream stacked on the mask stream along the batch.
        """
        b, hp, wp, _ = x.shape
        w = bool_masked_pos.reshape(-1, hp, wp, 1).to(y.dtype)
        y = y * (1 - w) + self.mask_token.to(y.dtype) * w
        x = x + self.segment_token_x
        y = y + self.segment_token_y
        pos = resize_abs_pos(self.pos_embed, self.config.pos_embed_cls_slot, (hp, wp))
        seg_type = torch.as_tensor(seg_type, device=x.device).reshape(-1)
        if seg_type.numel() == 1 and b > 1:
            seg_type = seg_type.expand(b)
        if seg_type.numel() != b:
            raise ValueError(f"seg_type has {seg_type.numel()} entries for a batch of {b}")
        is_ins = (seg_type == INSTANCE).reshape(b, 1, 1, 1)
        type_emb = torch.where(is_ins, self.type_token_ins, self.type_token_cls)
        x = x + pos + type_emb
        y = y + pos + type_emb
        return torch.cat([x, y], dim=0)

    def embed_images(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Single images (N, 3, h, w), normalised -> image tokens (N, h/p, w/p, C) and the decoder's skips.

        With an ``image_encoder`` the tokens are its stride-16 features projected to the width, and the skips are
        its stride-4 and stride-8 features for the FPN decoder, then with ``fine_prior`` the descriptors the
        correspondence prior matches (:func:`match_features`); otherwise the tokens are the patch embedding (the
        mask stream's embedding, shared as in the release) and there are no skips.
        """
        if self.image_encoder is None:
            return self.patch_embed(images), []
        # Constants, not buffers: a model built on the meta device and loaded with assign=True has no other state.
        scale = torch.tensor([2 * s for s in _STD], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        shift = torch.tensor([2 * m - 1 for m in _MEAN], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        x = images * scale + shift
        s4, s8, s16 = self.image_encoder(x)
        tokens = self.image_proj(s16).permute(0, 2, 3, 1)  # N C h/16 w/16 -> N h/16 w/16 C
        if self.config.decoder != "fpn":
            return tokens, []
        return tokens, ([s4, s8, match_features(s8, s16)] if self.config.fine_prior else [s4, s8])

    # The correspondence prior ---------------------------------------------------------------------------
    def example_keys(self, descriptors: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """Example images' descriptors (P, D, h/8, w/8) and their painted masks (P, 3, h, w) -> what a query reads:
        keys (P, h/8 * w/8, D) and values (P, h/8 * w/8, 3), the mask averaged over each 8x8 cell."""
        values = F.avg_pool2d(masks.float(), 8)
        return descriptors.flatten(2).transpose(1, 2), values.flatten(2).transpose(1, 2)

    def ensemble_prior(self, descriptors: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """The prior of T queries (T, D, h/8, w/8) that each read all P examples at once (the feature ensemble):
        keys (P, K, D) and values (P, K, 3) from :meth:`example_keys` -> (T, PRIOR_CHANS, h/8, w/8)."""
        t = descriptors.shape[0]
        keys, values = (k.reshape(1, -1, k.shape[-1]).expand(t, -1, -1) for k in (keys, values))
        return correspondence_prior(descriptors, keys, values)

    def canvas_prior(
        self,
        descriptors: Tensor,
        masks: Tensor,
        bool_masked_pos: Tensor,
        num_prompts: int = 1,
        query_only: bool = False,
    ) -> Tensor:
        """The correspondence prior of every image of B canvases, (2B, PRIOR_CHANS, h/8, w/8), example first; with
        ``query_only`` that of the B queries only, (B, PRIOR_CHANS, h/8, w/8).

        A query reads the visible mask pixels of the examples of the P canvases of its group (the feature
        ensemble's; its own example when P = 1); an example reads its own canvas's query, where visible (in
        training; at inference none is, and its prior is zero).

        Args:
            descriptors: (2B, D, h/8, w/8) from :meth:`embed_images` (the third skip).
            masks: the mask canvases (B, 3, H, W).
            bool_masked_pos: (B or 1, Hp * Wp) bool, True on masked patches.
            num_prompts: P.
        """
        n, d, h, w = descriptors.shape
        b, p = n // 2, num_prompts
        keys, values = self.example_keys(descriptors, _halves(masks))
        keys, values = keys.reshape(b, 2, h * w, d), values.reshape(b, 2, h * w, 3)
        grid = bool_masked_pos.bool().reshape(-1, 2, h // 2, w // 2)
        visible = ~grid.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).expand(b, 2, h, w).reshape(b, 2, -1)
        own = descriptors.reshape(b, 2, d, h, w)
        g = b // p
        queries = correspondence_prior(
            own[:, 1],
            keys[:, 0].reshape(g, p * h * w, d).repeat_interleave(p, dim=0),
            values[:, 0].reshape(g, p * h * w, 3).repeat_interleave(p, dim=0),
            visible[:, 0].reshape(g, p * h * w).repeat_interleave(p, dim=0),
        )
        if query_only:
            return queries
        examples = correspondence_prior(own[:, 0], keys[:, 1], values[:, 1], visible[:, 1])
        return torch.stack([examples, queries], dim=1).flatten(0, 1)

    def embed_canvas(self, canvas: Tensor) -> Tensor:
        """Patch-embed a canvas (B, 3, H, W) of two stacked images -> (B, Hp, Wp, C), one image at a time.

        The images are embedded as separate samples, so a convolutional stem never mixes the example's pixels
        into the query's tokens: embedding each image alone (as the predictor does to cache the example) gives
        the same tokens. Without a stem this equals embedding the whole canvas. This is the mask stream's
        embedding (and the image stream's in models without an ``image_encoder``).
        """
        b, c, h, w = canvas.shape
        tokens = self.patch_embed(_halves(canvas))  # 2B Hp/2 Wp C
        return tokens.reshape(b, 2, *tokens.shape[1:]).flatten(1, 2)

    def embed_image_canvas(self, canvas: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The image canvas (B, 3, H, W) -> tokens (B, Hp, Wp, C) and the decoder's skips, one image at a time
        (:meth:`embed_images`). The skips are (2B, ...), each sample's example before its query."""
        b = canvas.shape[0]
        tokens, skips = self.embed_images(_halves(canvas))
        return tokens.reshape(b, 2, *tokens.shape[1:]).flatten(1, 2), skips

    # Encoder ------------------------------------------------------------------------------------------
    def forward_encoder(self, h: Tensor, num_prompts: int = 1) -> list[Tensor]:
        """Run the blocks on the (2B, Hp, Wp, C) two-stream tokens; return the normed decoder taps.

        With num_prompts = P > 1 the batch is read as (T, P) and the query half is averaged over P after
        every attention (the feature ensemble); P = 1 is plain inference.
        """
        cfg = self.config
        taps = []
        for i, blk in enumerate(self.blocks):
            groups = 2 if i <= cfg.merge_index else 1
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(blk, h, groups, num_prompts, use_reentrant=False)
            else:
                h = blk(h, groups, num_prompts)
            if i == cfg.merge_index:
                half = h.shape[0] // 2
                h = (h[:half] + h[half:]) * 0.5
            if i in cfg.out_indices:
                taps.append(self.norm(h))
        return taps

    def forward_encoder_shared(self, h: Tensor, num_prompts: int) -> list[Tensor]:
        """:meth:`forward_encoder` with the feature ensemble over P prompts, the query half computed once per query.

        The P canvases of a query share their query half (the same query image; the mask half is all mask
        tokens), so its tokens are equal across them at the input and, since the ensemble averages them after
        every attention, after every block. Its norms, qkv, projection and MLP therefore run once per query
        instead of P times; attention still runs per canvas, each query row over its own canvas's prompt keys
        (:meth:`Block.forward_shared`). Equal, to float rounding, to ``forward_encoder(h, num_prompts)`` followed
        by taking entry 0 of each group. Inference only.

        Args:
            h: (2 T P, Hp, Wp, C) two-stream tokens laid out as for :meth:`forward_encoder`, P fastest, whose P
                canvases of each query have equal query halves (only entry 0's is read).
            num_prompts: P.

        Returns:
            The normed decoder taps of entry 0 of each group, (T, Hp, Wp, C) each.
        """
        cfg = self.config
        if self.training and cfg.drop_path_rate > 0:
            raise ValueError("forward_encoder_shared is for inference: call model.eval() (drop path is per canvas)")
        p, hh = num_prompts, h.shape[1] // 2
        if p < 1 or h.shape[0] % (2 * p):
            raise ValueError(f"a batch of {h.shape[0]} two-stream tokens is not 2 streams x groups of {p} prompts")
        prompt, query = h[:, :hh], h[::p, hh:]  # 2TP Hp/2 Wp C, 2T Hp/2 Wp C
        taps = []
        for i, blk in enumerate(self.blocks):
            prompt, query = blk.forward_shared(prompt, query, p)
            if i == cfg.merge_index:
                prompt = (prompt[: len(prompt) // 2] + prompt[len(prompt) // 2 :]) * 0.5
                query = (query[: len(query) // 2] + query[len(query) // 2 :]) * 0.5
            if i in cfg.out_indices:
                taps.append(self.norm(torch.cat([prompt[::p], query], dim=1)))
        return taps

    def encode(
        self, images: Tensor, masks: Tensor, bool_masked_pos: Tensor, seg_type: Tensor, num_prompts: int = 1
    ) -> list[Tensor]:
        """Canvases to the decoder taps: the embeddings, :meth:`embed`, :meth:`forward_encoder`.

        ``bool_masked_pos``: (B or 1, Hp * Wp) bool (or anything of that size).
        """
        return self.encode_with_skips(images, masks, bool_masked_pos, seg_type, num_prompts)[0]

    def encode_with_skips(
        self, images: Tensor, masks: Tensor, bool_masked_pos: Tensor, seg_type: Tensor, num_prompts: int = 1
    ) -> tuple[list[Tensor], list[Tensor]]:
        """:meth:`encode`, and the image encoder's fine features of every image of the canvas (the skips of
        :meth:`forward_decoder`; [] without an FPN decoder)."""
        bmp = bool_masked_pos.reshape(bool_masked_pos.shape[0], -1).bool()
        x, skips = self.embed_image_canvas(images)
        tokens = self.embed(x, self.embed_canvas(masks), bmp, seg_type)
        return self.forward_encoder(tokens, num_prompts), skips

    # Decoder ------------------------------------------------------------------------------------------
    def forward_decoder(
        self, taps: list[Tensor], query_only: bool = False, skips: list[Tensor] = (), prior: Tensor | None = None
    ) -> Tensor:
        """Taps (B, Hp, Wp, C) each -> canvas (B, 3, H, W) in normalised space.

        With ``query_only`` only the lower half (B, 3, H/2, W) is decoded. It is exact: the 3x3 conv needs one
        pixel row above the boundary, so one token row of the prompt half is decoded and its pixels dropped.
        The FPN decoder decodes each image on its own; it needs the ``skips`` of the images it decodes: of all
        2B images of the canvases ((2B, ...), example before query, as :meth:`encode` returns them), or of the B
        queries with ``query_only``. With ``fine_prior`` it reads the ``prior`` of those images (from
        :meth:`canvas_prior` or :func:`correspondence_prior`); None reads none found.
        """
        if self.config.decoder == "fpn":
            return self._decode_fpn(torch.cat(taps, dim=-1), query_only, list(skips), prior)
        p, d = self.config.patch_size, self.config.decoder_embed_dim
        h = torch.cat(taps, dim=-1)
        if query_only:
            h = h[:, h.shape[1] // 2 - 1 :]
        b, hp, wp, _ = h.shape
        h = self.decoder_embed(h)
        # B Hp Wp (p p d) -> B (Hp p) (Wp p) d, seen as B d H W in channels-last memory: the 3x3 conv runs on
        # it directly and the channel LayerNorm's permute is then free (no copy of the full-resolution map).
        h = h.reshape(b, hp, wp, p, p, d).permute(0, 1, 3, 2, 4, 5).reshape(b, hp * p, wp * p, d)
        out = self.decoder_pred(h.permute(0, 3, 1, 2))
        out = out[:, :, p:] if query_only else out
        return out.contiguous()

    def _decode_fpn(self, h: Tensor, query_only: bool, skips: list[Tensor], prior: Tensor | None) -> Tensor:
        b, hp, wp, _ = h.shape
        # B Hp Wp C -> the query halves, or 2B Hp/2 Wp C: every image of the canvas decoded on its own.
        h = h[:, hp // 2 :] if query_only else h.reshape(b * 2, hp // 2, wp, -1)
        if len(skips) < 2 or skips[0].shape[0] != h.shape[0]:
            got = [tuple(t.shape) for t in skips]
            raise ValueError(f"the FPN decoder needs the skips of the {h.shape[0]} images it decodes, got {got}")
        if prior is not None and prior.shape[0] != h.shape[0]:
            raise ValueError(
                f"the FPN decoder needs the prior of the {h.shape[0]} images it decodes, got {prior.shape}"
            )
        out = self.decoder_pred(self.decoder_embed(h).permute(0, 3, 1, 2), skips[:2], prior)  # N 3 h w
        if query_only:
            return out
        return out.reshape(b, 2, *out.shape[1:]).transpose(1, 2).flatten(2, 3)  # B 3 (2 h) w

    # Loss ---------------------------------------------------------------------------------------------
    def loss(self, pred: Tensor, target: Tensor, bool_masked_pos: Tensor, valid: Tensor | None = None) -> Tensor:
        """Smooth-L1 (beta 0.01) over the pixels of masked patches, times ``valid``, over their count.

        Args:
            pred, target: (B, 3, H, W) canvases in normalised space.
            bool_masked_pos: (B or 1, Hp * Wp) bool.
            valid: optional (B, 3 or 1, H, W) weights, 0 on ignored pixels.
        """
        p = self.config.patch_size
        b, _, hgt, wid = pred.shape
        m = bool_masked_pos.reshape(-1, 1, hgt // p, wid // p).to(pred.dtype)
        m = m.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3).expand(b, 3, hgt, wid)
        if valid is not None:
            m = m * valid
        loss = F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=0.01)
        return (loss * m).sum() / (m.sum() + 1e-2)

    # Forward ------------------------------------------------------------------------------------------
    def forward(
        self,
        images: Tensor,
        masks: Tensor,
        bool_masked_pos: Tensor,
        seg_type: Tensor,
        feature_ensemble: bool = False,
        num_prompts: int | None = None,
        valid: Tensor | None = None,
        return_loss: bool = False,
        query_only: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Predict the mask canvas.

        Args:
            images: image canvases (B, 3, H, W), example above query, normalised.
            masks: mask canvases (B, 3, H, W), normalised; masked patches are replaced by the mask token.
            bool_masked_pos: (B or 1, Hp * Wp) bool, True on masked patches (the query half at inference).
            seg_type: (B,) ints, 0 = semantic, 1 = instance.
            feature_ensemble: average the query half over prompts after every attention (the released
                model's context ensemble). The batch holds P prompts of one query, or T groups of P.
            num_prompts: P when the batch holds several queries; defaults to the whole batch.
            valid: pixel weights for the loss (B, 3, H, W).
            return_loss: also return the training loss against ``masks``.
            query_only: decode only the lower half (B, 3, H/2, W); see :meth:`forward_decoder`.

        Returns:
            The predicted canvas (B, 3, H, W), or (pred, loss) with ``return_loss``.
        """
        b = images.shape[0]
        p = 1
        if feature_ensemble:
            p = b if num_prompts is None else num_prompts
            if p < 1 or b % p:
                raise ValueError(f"batch of {b} is not a whole number of groups of {p} prompts")
        bool_masked_pos = bool_masked_pos.reshape(bool_masked_pos.shape[0], -1).bool()
        taps, skips = self.encode_with_skips(images, masks, bool_masked_pos, seg_type, p)
        prior = None
        if self.config.fine_prior:  # the queries' alone where only they are decoded
            prior = self.canvas_prior(skips[2], masks, bool_masked_pos, p, query_only=query_only and bool(skips))
        if query_only and skips:
            skips = [t.reshape(b, 2, *t.shape[1:])[:, 1] for t in skips]
        pred = self.forward_decoder(taps, query_only=query_only, skips=skips, prior=prior)
        if return_loss:
            if query_only:
                raise ValueError("return_loss needs the whole canvas; do not combine it with query_only")
            return pred, self.loss(pred, masks, bool_masked_pos, valid)
        return pred
