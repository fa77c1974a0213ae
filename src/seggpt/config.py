"""Model configuration and presets.

One frozen dataclass names everything the authors hard-coded. Presets are small builder functions that differ
only in the fields that matter (width, depth, heads, canvas), in the manner of SAM's ``build_sam_vit_*``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# Pretrained CNNs for the image stream ("" = none: the released linear patch embedding).
IMAGE_ENCODERS = ("", "efficientnet_lite0")


@dataclass(frozen=True)
class SegGPTConfig:
    """Architecture of a SegGPT model.

    The canvas is two images stacked vertically: the example (prompt) on top, the query below. Its size
    ``img_size`` is (H, W) of the whole canvas, so one image is (H / 2, W).
    """

    # (H, W) of the stacked canvas; the released model uses two 448x448 images -> 896x448.
    img_size: tuple[int, int] = (896, 448)
    # Square patches; the token grid is (Hp, Wp) = (H / patch_size, W / patch_size).
    patch_size: int = 16
    in_chans: int = 3
    # Convolutional stem before the patch projection: channels of each stride-2 3x3 conv (see
    # modeling.layers.PatchEmbed). Empty = the released linear patch embedding; only for models trained here.
    stem_channels: tuple[int, ...] = ()
    # A CNN beside the patch projection, added to the tokens (modeling.layers.ConvBranch): channels of each
    # stride-2 stage (one per halving of patch_size) and convs per stage. Empty = none (the released model).
    branch_channels: tuple[int, ...] = ()
    branch_depth: int = 2
    # A pretrained CNN for the image stream: "" = the released linear patch embedding; "efficientnet_lite0" =
    # EfficientNet-Lite0 (ImageNet) to stride 16, projected to the width (modeling.efficientnet). Masks always
    # keep the linear patch embedding. Needs patch_size 16.
    image_encoder: str = ""
    # "patch": the released decoder (Linear to patch_size**2 pixels of decoder_embed_dim channels, 3x3 conv,
    # channel norm, GELU, 1x1 conv). "fpn": upsampling x2 twice with the image encoder's stride-8 and stride-4
    # features (modeling.seggpt.FPNDecoder), then x4 bilinear; finer boundaries for the price of a few convs.
    decoder: str = "patch"
    # The FPN decoder also reads, at strides 8 and 4, each query pixel's correspondence prior: the example's
    # painted colours where the example's fine image features match it best (modeling.seggpt.correspondence_prior).
    # It gives the decoder a full-resolution cue for things thinner than a token. Off in the released models, on in
    # the embedded model (since its stage 5, configs/embedded_stage5.yaml).
    fine_prior: bool = False
    # Transformer width, depth and heads (ViT-L: 1024, 24, 16).
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    # Stochastic depth, rising linearly over depth; only active in training.
    drop_path_rate: float = 0.1
    # The absolute position table was pre-trained at this image size (14x14 grid at 224) and is resized
    # bicubically to the canvas grid at run time.
    pretrain_img_size: int = 224
    # The table has a leading class-token slot (197 = 14 * 14 + 1) that is dropped before use.
    pos_embed_cls_slot: bool = True
    # Image and mask streams run as separate samples through blocks 0..merge_index, then are averaged.
    merge_index: int = 2
    # Blocks whose outputs (each through the final norm) are concatenated for the decoder.
    out_indices: tuple[int, ...] = (5, 11, 17, 23)
    # Channels of the per-pixel decoder (decoder_embed maps to patch_size**2 * this).
    decoder_embed_dim: int = 64
    # Decomposed relative position terms in every attention (ViTDet / SAM form).
    use_rel_pos: bool = True
    # Windowed attention: blocks not listed in global_attn_indexes attend within window_size x window_size
    # windows. 0 means every block is global, which is what the released checkpoint was trained with.
    window_size: int = 0
    global_attn_indexes: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        h, w = self.img_size
        p = self.patch_size
        problems = []
        if h % p or w % p:
            problems.append(f"img_size {self.img_size} must be a multiple of patch_size {p}")
        if (h // p) % 2:
            problems.append(f"the canvas must hold two images: H / patch_size = {h // p} must be even")
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        if not self.out_indices or any(not 0 <= i < self.depth for i in self.out_indices):
            problems.append(f"out_indices {self.out_indices} must be non-empty and within depth {self.depth}")
        elif not 0 <= self.merge_index <= min(self.out_indices):
            problems.append(
                f"merge_index {self.merge_index} must not come after the first decoder output {min(self.out_indices)}"
            )
        if p % 2 ** len(self.stem_channels) or p < 2 ** len(self.stem_channels):
            problems.append(f"a stem of {len(self.stem_channels)} stride-2 convs does not divide patch_size {p}")
        if self.branch_channels and 2 ** len(self.branch_channels) != p:
            problems.append(
                f"a conv branch needs one stride-2 stage per halving of patch_size {p}, got {len(self.branch_channels)}"
            )
        if self.branch_depth < 1:
            problems.append(f"branch_depth must be >= 1, got {self.branch_depth}")
        if self.image_encoder not in IMAGE_ENCODERS:
            problems.append(f"image_encoder must be one of {sorted(IMAGE_ENCODERS)}, got {self.image_encoder!r}")
        elif self.image_encoder and (p != 16 or self.stem_channels or self.branch_channels):
            problems.append("a pretrained image_encoder needs patch_size 16 and no stem or conv branch")
        if self.decoder not in ("patch", "fpn"):
            problems.append(f"decoder must be 'patch' or 'fpn', got {self.decoder!r}")
        elif self.decoder == "fpn" and not self.image_encoder:
            problems.append("decoder 'fpn' needs the stride-4 and stride-8 features of an image_encoder")
        if self.fine_prior and self.decoder != "fpn":
            problems.append("fine_prior needs decoder 'fpn' (it is read with the image encoder's fine features)")
        if self.window_size < 0:
            problems.append(f"window_size must be >= 0, got {self.window_size}")
        if problems:
            raise ValueError("invalid SegGPTConfig: " + "; ".join(problems))

    # Derived sizes -------------------------------------------------------------------------------------
    @property
    def grid_size(self) -> tuple[int, int]:
        """Token grid (Hp, Wp) of the whole canvas."""
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of one image: the upper or the lower half of the canvas."""
        return self.img_size[0] // 2, self.img_size[1]

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def is_windowed(self, block: int) -> bool:
        return self.window_size > 0 and block not in self.global_attn_indexes

    # Serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegGPTConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown SegGPTConfig fields {unknown}; known fields: {sorted(names)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)

    def replace(self, **changes: Any) -> SegGPTConfig:
        return dataclasses.replace(self, **changes)


def evenly_spaced_outputs(depth: int, n: int = 4) -> tuple[int, ...]:
    """Decoder taps spread over depth as in the released model: (5, 11, 17, 23) for 24 blocks."""
    return tuple((k + 1) * depth // n - 1 for k in range(n))


def vit_large(**overrides: Any) -> SegGPTConfig:
    """The released SegGPT ViT-L: 24 blocks of width 1024, 896x448 canvas, every block global."""
    return SegGPTConfig(**overrides)


def vit_base(**overrides: Any) -> SegGPTConfig:
    """ViT-B width and depth (the supplementary's 87 M variant), decoder taps spread over 12 blocks."""
    base = dict(embed_dim=768, depth=12, num_heads=12, out_indices=evenly_spaced_outputs(12))
    return SegGPTConfig(**{**base, **overrides})


def vit_small(**overrides: Any) -> SegGPTConfig:
    """The project's embedded CPU model: two 64x64 images per canvas, patch 8, width 192, 6 blocks.

    Sized to train from scratch on a 2-core CPU in bf16 within about two hours (see configs/embedded.yaml).
    """
    base = dict(
        img_size=(128, 64),
        patch_size=8,
        embed_dim=192,
        depth=6,
        num_heads=6,
        merge_index=2,
        out_indices=(2, 3, 4, 5),
        decoder_embed_dim=32,
        pretrain_img_size=64,
        drop_path_rate=0.0,
    )
    return SegGPTConfig(**{**base, **overrides})


def vit_tiny(**overrides: Any) -> SegGPTConfig:
    """A test-sized model: runs a forward in milliseconds on the CPU."""
    base = dict(
        img_size=(64, 32),
        patch_size=8,
        embed_dim=32,
        depth=4,
        num_heads=2,
        out_indices=(1, 2, 3),
        merge_index=1,
        decoder_embed_dim=8,
        pretrain_img_size=32,
        drop_path_rate=0.0,
    )
    return SegGPTConfig(**{**base, **overrides})


def lite_small(**overrides: Any) -> SegGPTConfig:
    """The project's embedded model: ImageNet EfficientNet-Lite0 image tokens, 6 blocks of width 192, FPN decoder.

    Two 192x192 images per canvas (12x12 tokens each). The image stream starts from pretrained features, so it
    learns in-context segmentation of photographs on a CPU budget (configs/embedded.yaml; docs/embedded-model.md).
    Measured on two cores (bf16 autocast, batch 16, fwd + bwd with the encoder frozen): 1.5 s a step at width 192,
    2.0 s at width 256; at 224 px the CPU's bf16 depthwise convolutions slowed the encoder four-fold.
    """
    base = dict(
        img_size=(384, 192),
        patch_size=16,
        image_encoder="efficientnet_lite0",
        decoder="fpn",
        embed_dim=192,
        depth=6,
        num_heads=6,
        merge_index=1,
        out_indices=(1, 3, 5),
        decoder_embed_dim=32,
        pretrain_img_size=192,
        pos_embed_cls_slot=False,
        drop_path_rate=0.0,
    )
    return SegGPTConfig(**{**base, **overrides})


PRESETS = {
    "vit_large": vit_large,
    "vit_base": vit_base,
    "vit_small": vit_small,
    "vit_tiny": vit_tiny,
    "lite_small": lite_small,
}


def preset(name: str, **overrides: Any) -> SegGPTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name](**overrides)
