"""Checkpoints: the official ``.pth``, Hugging Face folders, and this project's own safetensors file.

Every format is read into a state dict with the official key names (which are this project's module names),
then loaded strictly. Conversions are pure dict -> dict functions with exact inverses.

Formats:
    official  ``torch.save({"model": state_dict})`` as the authors released ``seggpt_vit_large.pth`` (a bare
              state dict is accepted too). The architecture is inferred from tensor shapes.
    hf        a folder as ``SegGptForImageSegmentation.save_pretrained`` writes it: ``config.json`` plus
              ``model.safetensors`` or ``pytorch_model.bin``.
    native    one ``.safetensors`` file whose metadata holds the full :class:`SegGPTConfig` as JSON.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from seggpt.config import SegGPTConfig, evenly_spaced_outputs
from seggpt.devices import int8_compute_dtype, parse_dtype, resolve_device
from seggpt.hub import resolve as resolve_hub_id
from seggpt.io import atomic_write
from seggpt.modeling import SegGPT, quant
from seggpt.modeling.layers import resize_rel_pos
from seggpt.modeling.quant import is_quantized, quantize_linears_
from seggpt.transforms import crosswise

log = logging.getLogger(__name__)

StateDict = dict[str, Tensor]
FORMATS = ("native", "hf", "official")
NATIVE_FORMAT_TAG = "seggpt-native-v1"
OFFICIAL_CONFIG_KEY = "seggpt_config"
EMBEDDED_WEIGHTS = Path(__file__).parent / "weights" / "seggpt_small.safetensors"
# The size the embedded model segments still images at when none is asked for. It trained at 192 px per image
# (12x12 tokens of 16 pixels) but reads photographs better a little larger: one-shot, seeds 0-2, read at threshold
# 0.3, on training parts only, CamVid mIoU with a quarter of its training images as targets 38.7 at 192, 40.1 at
# 224, 41.6 at 256, 41.5 at 320, and Kvasir IoU on 100 training images 74.1 at 192, 74.7 at 256
# (docs/embedded-model.md). `load_model(image_size=...)` runs it at another size. Each image at its own shape on as
# many patches (SegGPTPredictor(keep_aspect=True): a 4:3 photograph at 224x288) gained on CamVid's development
# targets and lost on its validation part (docs/embedded-model.md, "Images read at their shape"), so images stay square.
EMBEDDED_IMAGE_SIZE = 256
# The size it segments video at when none is asked for (`seggpt video`, `SegGPTVideoPredictor`, `seggpt eval
# davis2017`), as (height, width): 16:9, the shape of most video, so that frames are not squeezed. Chosen on
# DAVIS-2016's training sequences (configs/splits/davis2016_train.txt). Square sizes first, J&F with one recent
# frame: 51.2 at 192, 58.4 at 256, 62.2 at 320, 65.1 at 384, 65.4 at 448: object boundaries at 480p need the finer
# grid. Then, with 2 recent frames decoded at EMBEDDED_VIDEO_THRESHOLD, 288x512 (as many tokens as 384x384, the
# 854x480 frames' own shape) against 384x384: 81.1 (J 81.9, F 80.2) against 77.6 (J 79.0, F 76.2).
EMBEDDED_VIDEO_IMAGE_SIZE = (288, 512)
# The recent predicted frames kept as examples in video when none is asked for (`seggpt video`,
# `SegGPTVideoPredictor`, the app): the paper's 8, except for the embedded model. On the DAVIS-2016 training
# sequences at 384 px it scored J&F 60.8 with none, 65.1 with 1, 65.3 with 2 and 64.3 with 8, so it keeps 2, at
# about 2.4 times the speed of 8. `seggpt eval davis2017` keeps the paper's protocol (8) for every model.
PAPER_VIDEO_CONTEXT = 8
EMBEDDED_VIDEO_CONTEXT = 2
# How far from the background colour towards a label's colour a painted pixel must be to take that label
# (SegGPTPredictor's `threshold`). 0.5 is the nearest palette colour, the rule of the released code and of
# `transformers`; every checkpoint keeps it for still images. At 192 px the embedded model painted what it was unsure
# of in dim colours (trees shown by one small example: grey 105 of 255 on the trees of every target, 5 elsewhere) and
# 0.3 read them better (CamVid, a quarter of the training images as targets, seeds 0-2: 38.7 against 36.8); at its
# image size of 256 it paints them plainly and the threshold hardly matters: 41.6 at 0.3, 41.8 at 0.4, 41.9 at 0.5,
# and Kvasir on 100 training images 74.7, 75.0, 75.2. Video is another matter: a dim halo kept as an example grows
# frame by frame. On DAVIS-2016's training sequences (2 recent frames, 384 px) J&F was 62.1 at 0.2, 67.9 at 0.3,
# 71.6 at 0.4, 74.4 at 0.5, 76.3 at 0.6, 77.6 at 0.7, 77.8 at 0.8 and 75.7 at 0.9: video keeps 0.7, the lower end of
# the top.
NEAREST_COLOUR_THRESHOLD = 0.5
EMBEDDED_THRESHOLD = NEAREST_COLOUR_THRESHOLD
EMBEDDED_VIDEO_THRESHOLD = 0.7


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is; the message says what is wrong and what to do."""


# Key conversion -----------------------------------------------------------------------------------------
# (official, Hugging Face) name pairs. Block-level pairs apply under blocks.i. <-> model.encoder.layers.i.
_TOP_LEVEL = [
    ("mask_token", "model.embeddings.mask_token"),
    ("segment_token_x", "model.embeddings.segment_token_input"),
    ("segment_token_y", "model.embeddings.segment_token_prompt"),
    ("type_token_cls", "model.embeddings.type_token_semantic"),
    ("type_token_ins", "model.embeddings.type_token_instance"),
    ("pos_embed", "model.embeddings.position_embeddings"),
    ("patch_embed.proj.", "model.embeddings.patch_embeddings.projection."),
    ("norm.", "model.encoder.layernorm."),
    ("decoder_embed.", "decoder.decoder_embed."),
    ("decoder_pred.0.", "decoder.decoder_pred.conv."),
    ("decoder_pred.1.", "decoder.decoder_pred.layernorm."),
    ("decoder_pred.3.", "decoder.decoder_pred.head."),
]
_IN_BLOCK = [
    ("norm1.", "layernorm_before."),
    ("attn.qkv.", "attention.qkv."),
    ("attn.proj.", "attention.proj."),
    ("attn.rel_pos_h", "attention.rel_pos_h"),
    ("attn.rel_pos_w", "attention.rel_pos_w"),
    ("norm2.", "layernorm_after."),
    ("mlp.fc1.", "mlp.lin1."),
    ("mlp.fc2.", "mlp.lin2."),
]
_OFFICIAL_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HF_BLOCK = re.compile(r"^model\.encoder\.layers\.(\d+)\.(.+)$")


def _rename(key: str, pairs: list[tuple[str, str]], forward: bool) -> str | None:
    for official, hf in pairs:
        src, dst = (official, hf) if forward else (hf, official)
        if key == src or (src.endswith(".") and key.startswith(src)):
            return dst + key[len(src) :]
    return None


def official_to_hf(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Rename official keys to ``SegGptForImageSegmentation`` keys. Unknown keys are an error."""
    out, unknown = {}, []
    for key, value in state_dict.items():
        m = _OFFICIAL_BLOCK.match(key)
        inner = _rename(m.group(2), _IN_BLOCK, True) if m else None
        new = f"model.encoder.layers.{m.group(1)}.{inner}" if m and inner else _rename(key, _TOP_LEVEL, True)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(f"keys with no Hugging Face name: {_some(unknown)}")
    return out


def hf_to_official(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Rename ``SegGptForImageSegmentation`` keys to the official ones. Unknown keys are an error."""
    out, unknown = {}, []
    for key, value in state_dict.items():
        m = _HF_BLOCK.match(key)
        inner = _rename(m.group(2), _IN_BLOCK, False) if m else None
        new = f"blocks.{m.group(1)}.{inner}" if m and inner else _rename(key, _TOP_LEVEL, False)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(
            f"keys that are not SegGptForImageSegmentation weights: {_some(unknown)}. "
            "A SegGptModel checkpoint (no decoder) cannot segment; use the ForImageSegmentation one."
        )
    return out


def is_hf_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    return any(k.startswith(("model.embeddings.", "model.encoder.", "decoder.decoder_")) for k in state_dict)


def to_official(state_dict: Mapping[str, Tensor]) -> StateDict:
    """The one filter every foreign state dict goes through: official names, whatever came in."""
    return hf_to_official(state_dict) if is_hf_state_dict(state_dict) else dict(state_dict)


def _some(keys: list[str], n: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


# Architecture from tensor shapes -------------------------------------------------------------------------
def _count_stem(state_dict: Mapping[str, Tensor]) -> int:
    n = 0
    while f"patch_embed.stem.{n}.conv.weight" in state_dict:
        n += 1
    return n


def _branch_shape(state_dict: Mapping[str, Tensor]) -> tuple[tuple[int, ...], int]:
    """(channels, depth) of a conv branch (``patch_embed.branch.stages.i.j``), ((), 2) without one."""
    channels = []
    while f"patch_embed.branch.stages.{len(channels)}.0.conv.weight" in state_dict:
        channels.append(state_dict[f"patch_embed.branch.stages.{len(channels)}.0.conv.weight"].shape[0])
    depth = 1
    while f"patch_embed.branch.stages.0.{depth}.conv.weight" in state_dict:
        depth += 1
    return tuple(channels), depth if channels else 2


def infer_config(state_dict: Mapping[str, Tensor], **overrides) -> SegGPTConfig:
    """The architecture of an official-key state dict, read from its tensor shapes.

    Heads come from the relative-position width (C / head_dim), the canvas from the table lengths
    (Hp = (len(rel_pos_h) + 1) / 2). What shapes cannot tell (merge_index, the decoder taps) takes the
    released model's rule: merge after block 2, taps spread evenly over depth.
    """
    try:
        w = state_dict["patch_embed.proj.weight"]
        c, _, p, _ = w.shape
        # A convolutional stem (models trained here): n stride-2 convs before a projection of patch / 2**n.
        stem = [state_dict[f"patch_embed.stem.{i}.conv.weight"] for i in range(_count_stem(state_dict))]
        in_chans = stem[0].shape[1] if stem else w.shape[1]
        p <<= len(stem)
        depth = 1 + max(int(m.group(1)) for k in state_dict if (m := _OFFICIAL_BLOCK.match(k)))
        fc1 = state_dict["blocks.0.mlp.fc1.weight"]
        n_pos = state_dict["pos_embed"].shape[1]
        dec_in = state_dict["decoder_embed.weight"].shape[1]
        dec_dim = state_dict["decoder_pred.0.weight"].shape[0]
    except (KeyError, ValueError) as e:
        raise CheckpointError(
            f"not a SegGPT state dict: cannot read the architecture ({type(e).__name__}: {e}). "
            "Expected keys such as patch_embed.proj.weight, blocks.0.mlp.fc1.weight, pos_embed."
        ) from None
    use_rel_pos = "blocks.0.attn.rel_pos_h" in state_dict
    branch_channels, branch_depth = _branch_shape(state_dict)
    fields: dict = dict(
        patch_size=p,
        in_chans=in_chans,
        stem_channels=tuple(t.shape[0] for t in stem),
        branch_channels=branch_channels,
        branch_depth=branch_depth,
        embed_dim=c,
        depth=depth,
        mlp_ratio=fc1.shape[0] / c,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
        use_rel_pos=use_rel_pos,
        decoder_embed_dim=dec_dim,
        out_indices=evenly_spaced_outputs(depth, dec_in // c),
    )
    # Merge after block 2 as released, but never after the first decoder tap of a shallow model.
    fields["merge_index"] = min(2, min(fields["out_indices"]))
    side_cls, side = math.isqrt(n_pos - 1), math.isqrt(n_pos)
    if side_cls * side_cls == n_pos - 1:
        fields.update(pretrain_img_size=side_cls * p, pos_embed_cls_slot=True)
    elif side * side == n_pos:
        fields.update(pretrain_img_size=side * p, pos_embed_cls_slot=False)
    else:
        raise CheckpointError(f"pos_embed has {n_pos} positions: neither S*S nor S*S + 1")
    if use_rel_pos:
        lens_h = [state_dict[f"blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(depth)]
        lens_w = [state_dict[f"blocks.{i}.attn.rel_pos_w"].shape[0] for i in range(depth)]
        head_dim = state_dict["blocks.0.attn.rel_pos_h"].shape[1]
        fields["num_heads"] = c // head_dim
        grid_h, grid_w = (max(lens_h) + 1) // 2, (max(lens_w) + 1) // 2
        fields["img_size"] = (grid_h * p, grid_w * p)
        # Blocks with shorter tables attend within square windows of that side.
        windowed = [i for i in range(depth) if (lens_h[i], lens_w[i]) != (max(lens_h), max(lens_w))]
        if windowed:
            fields["window_size"] = (lens_h[windowed[0]] + 1) // 2
            fields["global_attn_indexes"] = tuple(i for i in range(depth) if i not in windowed)
    elif "num_heads" not in overrides or "img_size" not in overrides:
        raise CheckpointError(
            "a checkpoint without relative position tables does not record its heads or canvas; "
            "pass num_heads= and img_size= to load_model"
        )
    fields.update(overrides)
    return SegGPTConfig(**fields)


# Hugging Face config.json <-> SegGPTConfig --------------------------------------------------------------
def config_from_hf(d: Mapping) -> SegGPTConfig:
    def pair(v):
        return tuple(v) if isinstance(v, list | tuple) else (v, v)

    p = d.get("patch_size", 16)
    p = p[0] if isinstance(p, list | tuple) else p
    c = d.get("hidden_size", 1024)
    pre = d.get("pretrain_image_size", 224)
    return SegGPTConfig(
        img_size=pair(d.get("image_size", (896, 448))),
        patch_size=p,
        in_chans=d.get("num_channels", 3),
        embed_dim=c,
        depth=d.get("num_hidden_layers", 24),
        num_heads=d.get("num_attention_heads", 16),
        mlp_ratio=(d.get("mlp_dim") or 4 * c) / c,
        qkv_bias=d.get("qkv_bias", True),
        layer_norm_eps=d.get("layer_norm_eps", 1e-6),
        drop_path_rate=d.get("drop_path_rate", 0.1),
        pretrain_img_size=pre[0] if isinstance(pre, list | tuple) else pre,
        merge_index=d.get("merge_index", 2),
        out_indices=tuple(d.get("intermediate_hidden_state_indices", (5, 11, 17, 23))),
        decoder_embed_dim=d.get("decoder_hidden_size", 64),
        use_rel_pos=d.get("use_relative_position_embeddings", True),
    )


def config_to_hf(cfg: SegGPTConfig) -> dict:
    if cfg.window_size or not cfg.pos_embed_cls_slot or cfg.stem_channels or cfg.branch_channels:
        raise CheckpointError(
            "the Hugging Face SegGPT has no windowed attention, no convolutional stem or branch and always has a "
            "class slot in its position table; this model cannot be written in that format "
            "(use --to native or --to official)"
        )
    return {
        "architectures": ["SegGptForImageSegmentation"],
        "model_type": "seggpt",
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.layer_norm_eps,
        "image_size": list(cfg.img_size),
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans,
        "qkv_bias": cfg.qkv_bias,
        "mlp_dim": int(cfg.embed_dim * cfg.mlp_ratio),
        "drop_path_rate": cfg.drop_path_rate,
        "pretrain_image_size": cfg.pretrain_img_size,
        "decoder_hidden_size": cfg.decoder_embed_dim,
        "use_relative_position_embeddings": cfg.use_rel_pos,
        "merge_index": cfg.merge_index,
        "intermediate_hidden_state_indices": list(cfg.out_indices),
        "beta": 0.01,
    }


# Reading --------------------------------------------------------------------------------------------------
def _torch_load(path: Path) -> tuple[dict, dict | None]:
    """(state dict, the seggpt config dict stored beside it or None)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain tensor checkpoint. torch.load(weights_only=True) "
            f"found objects that would run code ({str(e).splitlines()[0][:200]}). Only load files you trust; "
            "re-save the state dict with torch.save(model.state_dict(), ...) or convert it to safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint: {e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    # A training checkpoint (checkpoints/step_*.pt of `seggpt train`) keeps its model's config as "model_config".
    key = OFFICIAL_CONFIG_KEY if OFFICIAL_CONFIG_KEY in obj else "model_config"
    cfg_dict = obj.get(key) if isinstance(obj.get(key), dict) else None
    for wrapper in ("model", "state_dict"):
        if wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {_some(bad)}")
    return obj, cfg_dict


def _safetensors_load(path: Path) -> tuple[StateDict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {path} as safetensors: {e}") from None


def read_checkpoint(source: str | os.PathLike, **config_overrides) -> tuple[StateDict, SegGPTConfig]:
    """Read any supported checkpoint into (official-key state dict, config). Does not build a model.

    ``source`` is a path or a Hugging Face hub id (:mod:`seggpt.hub`; a local path that exists wins).
    ``config_overrides`` replace config fields, for what a bare official checkpoint cannot tell."""
    sd, cfg = _read(resolve_hub_id(source), config_overrides)
    return sd, (cfg.replace(**config_overrides) if config_overrides else cfg)


def _read(path: Path, overrides: dict) -> tuple[StateDict, SegGPTConfig]:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(
                f"{path} is a folder without config.json; a Hugging Face checkpoint folder holds config.json "
                "and model.safetensors (or pytorch_model.bin)"
            )
        hf_cfg = json.loads(cfg_file.read_text())
        if hf_cfg.get("model_type") != "seggpt":
            raise CheckpointError(f"{cfg_file} has model_type {hf_cfg.get('model_type')!r}, not 'seggpt'")
        if (path / "model.safetensors").is_file():
            sd, _ = _safetensors_load(path / "model.safetensors")
        elif (path / "pytorch_model.bin").is_file():
            sd, _ = _torch_load(path / "pytorch_model.bin")
        else:
            raise CheckpointError(f"{path} has config.json but neither model.safetensors nor pytorch_model.bin")
        return hf_to_official(sd), config_from_hf(hf_cfg)
    if path.suffix == ".safetensors":
        sd, meta = _safetensors_load(path)
        if meta.get("format") == NATIVE_FORMAT_TAG:
            return dict(sd), SegGPTConfig.from_dict(json.loads(meta["config"]))
        sd = to_official(sd)
        return sd, infer_config(sd, **overrides)
    sd, cfg_dict = _torch_load(path)
    sd = to_official(sd)
    # Files this project writes in the official layout carry the config beside "model" (the authors' loader
    # reads only "model"); the released checkpoint does not, so its architecture comes from tensor shapes.
    return sd, (SegGPTConfig.from_dict(cfg_dict) if cfg_dict else infer_config(sd, **overrides))


def load_state_dict_strict(
    model: SegGPT, state_dict: Mapping[str, Tensor], where: str = "checkpoint", assign: bool = False
) -> None:
    """``load_state_dict(strict=True)`` with one error that names every missing, unexpected and misshapen key.
    ``assign`` adopts the given tensors (for a model built on the meta device)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} (model wants {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_some(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_some(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} wrong shape(s): {_some(shapes)}")
    if problems:
        raise CheckpointError(f"{where} does not fit the model: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True, assign=assign)


def _skeleton(cfg: SegGPTConfig) -> SegGPT:
    """The model's structure without allocating or initialising weights (a ViT-L would take seconds)."""
    with torch.device("meta"):
        return SegGPT(cfg)


def _is_embedded(source: str | os.PathLike | None) -> bool:
    return source is None or Path(source).resolve() == EMBEDDED_WEIGHTS.resolve()


def default_image_size(
    source: str | os.PathLike | None, video: bool = False, frame_size: tuple[int, int] | None = None
) -> int | tuple[int, int] | None:
    """The size :func:`load_model` runs ``source`` at when none is asked for: for the embedded model (None, or
    its file) :data:`EMBEDDED_IMAGE_SIZE`, or :data:`EMBEDDED_VIDEO_IMAGE_SIZE` for video; for any other
    checkpoint None, the size it was trained at.

    ``frame_size``: (height, width) of the video's frames. A landscape video size is turned to portrait for
    portrait frames (and the other way), so that frames keep their shape: 512x288 for a phone's 1080x1920.
    """
    if not _is_embedded(source):
        return None
    if not video:
        return EMBEDDED_IMAGE_SIZE
    size = EMBEDDED_VIDEO_IMAGE_SIZE
    if frame_size is not None and not isinstance(size, int) and crosswise(frame_size, size):
        return (size[1], size[0])
    return size


def default_video_context(source: str | os.PathLike | None) -> int:
    """The recent frames video propagation keeps as examples with ``source`` when none is asked for:
    :data:`EMBEDDED_VIDEO_CONTEXT` for the embedded model (None, or its file), the paper's
    :data:`PAPER_VIDEO_CONTEXT` for any other checkpoint."""
    return EMBEDDED_VIDEO_CONTEXT if _is_embedded(source) else PAPER_VIDEO_CONTEXT


def default_threshold(source: str | os.PathLike | None, video: bool = False) -> float:
    """The decoding threshold a predictor uses with ``source`` when none is asked for: for the embedded model (None,
    or its file) :data:`EMBEDDED_THRESHOLD`, or :data:`EMBEDDED_VIDEO_THRESHOLD` for video; for any other
    checkpoint :data:`NEAREST_COLOUR_THRESHOLD` (the nearest colour, as the released code decodes)."""
    if not _is_embedded(source):
        return NEAREST_COLOUR_THRESHOLD
    return EMBEDDED_VIDEO_THRESHOLD if video else EMBEDDED_THRESHOLD


def load_model(
    source: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = torch.float32,
    image_size: int | tuple[int, int] | None = None,
    video: bool = False,
    **config_overrides,
) -> SegGPT:
    """Build a SegGPT from a checkpoint and load it strictly, in eval mode.

    Args:
        source: an official ``.pth``, a Hugging Face folder, a native ``.safetensors``, a Hugging Face hub id
            (``BAAI/seggpt-vit-large``, ``BAAI/SegGPT``, ``OWNER/REPO/FILE``, each with an optional
            ``@REVISION``; see :mod:`seggpt.hub`), or None for the model embedded in this package.
        device: where the parameters live: "auto" (cuda, then mps, then cpu), "cpu", "cuda:1", ...
            (:func:`seggpt.devices.resolve_device`).
        dtype: their precision: a torch dtype or "fp32", "bf16", "fp16" (or float32, bfloat16, float16), or
            "int8" (CPU only): the linear layers dynamically quantised to int8, the rest in bf16 where the CPU has
            bf16 kernels (:func:`to_precision`).
        image_size: run the model on images of this side (or (H, W)), a multiple of the patch size
            (:func:`set_image_size`). None: :func:`default_image_size` (the size the checkpoint was trained at,
            except for the embedded model).
        video: the model is for video: with ``image_size`` None the embedded model loads at
            :data:`EMBEDDED_VIDEO_IMAGE_SIZE` (other checkpoints are the same for both).
        config_overrides: fields the checkpoint cannot tell (for example ``merge_index``).
    """
    if source is None:
        if not EMBEDDED_WEIGHTS.is_file():
            raise FileNotFoundError(
                "no embedded model yet: this build of seggpt ships without default weights. "
                "Pass a checkpoint (an official .pth, a Hugging Face folder or a seggpt .safetensors)."
            )
        source = EMBEDDED_WEIGHTS
    device = resolve_device(device)
    dtype = parse_dtype(dtype, device)  # a wrong name, or int8 on a GPU, fails before any reading
    if image_size is None:
        image_size = default_image_size(source, video)
    sd, cfg = read_checkpoint(source, **config_overrides)
    if image_size is not None:
        sd, cfg = set_image_size(sd, cfg, image_size)
    model = _skeleton(cfg)
    load_dtype = torch.float32 if dtype is torch.int8 else dtype  # int8 is quantised from the float32 weights
    sd = {k: v.to(device=device, dtype=load_dtype) for k, v in sd.items()}
    load_state_dict_strict(model, sd, where=str(source), assign=True)
    log.info("loaded %s (%.1f M parameters)", source, sum(p.numel() for p in model.parameters()) / 1e6)
    if dtype is torch.int8:
        to_precision(model, device, dtype)
    return model.eval()


def to_precision(model: SegGPT, device: str | torch.device, dtype: str | torch.dtype) -> SegGPT:
    """Move ``model`` to ``device`` in ``dtype``, in place as ``Module.to`` does; returns it.

    ``int8`` (CPU only) replaces every linear layer (qkv, proj, MLP, ``decoder_embed``) by an int8 one whose
    activations are quantised at run time (:mod:`seggpt.modeling.quant`), and puts the rest (norms, tokens,
    convolutions, attention) in :func:`seggpt.devices.int8_compute_dtype`. It cannot be undone: load the model
    again for another precision. A model quantised already keeps its int8 layers.
    """
    device = resolve_device(device)
    dtype = parse_dtype(dtype, device)
    if dtype is not torch.int8:
        if is_quantized(model):
            name = str(dtype).removeprefix("torch.")
            raise ValueError(f"this model is quantised to int8; load it again to run it in {name}")
        return model.to(device=device, dtype=dtype)
    if not quant._onednn_available():
        log.warning(
            "int8 on a CPU without VNNI (or without oneDNN, or where oneDNN has no fast int8 kernel for the CPU) "
            "computes its integer products as float32 matmuls: no faster than fp32 there (embedded model on an "
            "AVX2-only CPU: 10.2 against 11 images/s); fp32 is the better choice on this CPU"
        )
    if not is_quantized(model):
        quantize_linears_(model.to(device=device, dtype=torch.float32))
    return model.to(device=device, dtype=int8_compute_dtype())


def set_image_size(
    state_dict: Mapping[str, Tensor], config: SegGPTConfig, image_size: int | tuple[int, int]
) -> tuple[StateDict, SegGPTConfig]:
    """Weights and config for running a model at another input size with the same patches (another token grid).

    ``image_size`` is one image's (H, W), or its side; the canvas is two of them stacked. The absolute position
    embedding is interpolated from ``pretrain_img_size`` at run time already; the relative position tables are
    resized here, linearly, exactly as attention resizes a table that does not fit its grid. Nothing is learnt:
    a model trained at one size and run at another sees its objects on more (or fewer) tokens.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(int(v) for v in image_size)
    p = config.patch_size
    if h < p or w < p or h % p or w % p:
        raise ValueError(f"image size {h}x{w} must be a positive multiple of the patch size {p} on both sides")
    new = config.replace(img_size=(2 * h, w))
    if new.img_size == config.img_size:
        return dict(state_dict), config
    gh, gw = new.grid_size
    out = dict(state_dict)
    for k, v in state_dict.items():
        block = re.fullmatch(r"blocks\.(\d+)\.attn\.rel_pos_([hw])", k)
        if block and not config.is_windowed(int(block.group(1))):  # window tables do not depend on the grid
            out[k] = resize_rel_pos(v, 2 * (gh if block.group(2) == "h" else gw) - 1)
    return out, new


def scale_resolution(
    state_dict: Mapping[str, Tensor], config: SegGPTConfig, factor: int
) -> tuple[StateDict, SegGPTConfig]:
    """Weights for ``factor`` times the input resolution on the same token grid: patches ``factor`` times wider.

    The patch-embedding kernel is spread over ``factor x factor`` pixels (each weight divided among them) and
    each output pixel of ``decoder_embed`` copies the one it covered before. So on an image upsampled by
    ``factor`` (nearest neighbour) the encoder computes exactly what it computed on the original image, and the
    decoder's input is that upsampled; only the decoder's 3x3 convolution now sees a smaller neighbourhood.
    A starting point for fine-tuning at the higher resolution, where the finer pixels carry new detail.
    """
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    factor = int(factor)
    if factor == 1:
        return dict(state_dict), config
    if config.stem_channels or config.branch_channels:
        raise CheckpointError(
            "cannot scale the resolution of a model with a convolutional stem or branch (stem_channels, "
            "branch_channels)"
        )
    need = ("patch_embed.proj.weight", "decoder_embed.weight", "decoder_embed.bias")
    if any(k not in state_dict for k in need):
        raise CheckpointError(
            f"cannot scale the resolution: the state dict lacks {[k for k in need if k not in state_dict]}"
        )
    p, d, q = config.patch_size, config.decoder_embed_dim, config.patch_size * factor
    out = dict(state_dict)
    w = state_dict["patch_embed.proj.weight"]  # (C, 3, p, p)
    out["patch_embed.proj.weight"] = w.repeat_interleave(factor, 2).repeat_interleave(factor, 3) / factor**2
    # decoder_embed rows are (i, j, channel) of a p x p patch; row (I, J, c) of the q x q patch copies (I//f, J//f, c).
    for name in ("decoder_embed.weight", "decoder_embed.bias"):
        t = state_dict[name]
        t = t.reshape(p, p, d, *t.shape[1:]).repeat_interleave(factor, 0).repeat_interleave(factor, 1)
        out[name] = t.reshape(q * q * d, *t.shape[3:])
    h, w_ = config.img_size
    new = config.replace(
        img_size=(h * factor, w_ * factor), patch_size=q, pretrain_img_size=config.pretrain_img_size * factor
    )
    return out, new


# Writing --------------------------------------------------------------------------------------------------
def _contiguous(sd: Mapping[str, Tensor], dtype: torch.dtype | None = None) -> StateDict:
    return {k: (v.to(dtype) if dtype else v).detach().cpu().contiguous() for k, v in sd.items()}


def save_native(
    model_or_sd: SegGPT | Mapping[str, Tensor],
    path: str | os.PathLike,
    config: SegGPTConfig | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write the native format: one safetensors file with the config in its metadata. Atomic."""
    from safetensors.torch import save_file

    if isinstance(model_or_sd, SegGPT):
        config, sd = model_or_sd.config, model_or_sd.state_dict()
    else:
        sd = model_or_sd
        if config is None:
            raise ValueError("save_native needs the config when given a bare state dict")
    meta = {"format": NATIVE_FORMAT_TAG, "config": config.to_json(), **(extra_metadata or {})}
    dst = Path(path)
    atomic_write(dst, lambda tmp: save_file(_contiguous(sd, dtype), tmp, metadata=meta), overwrite)
    return dst


def save_official(
    sd: Mapping[str, Tensor], path: str | os.PathLike, config: SegGPTConfig | None = None, overwrite: bool = False
) -> Path:
    """Write ``{"model": state_dict}`` with torch.save, as the authors released it. Atomic.

    With ``config`` its fields are stored beside ``"model"`` (plain types, readable with weights_only), so a
    round trip keeps what tensor shapes cannot tell; the authors' loader ignores the extra entry."""
    obj: dict = {"model": _contiguous(sd)}
    if config is not None:
        obj[OFFICIAL_CONFIG_KEY] = config.to_dict()
    dst = Path(path)
    atomic_write(dst, lambda tmp: torch.save(obj, tmp), overwrite)
    return dst


def save_hf(sd: Mapping[str, Tensor], config: SegGPTConfig, path: str | os.PathLike, overwrite: bool = False):
    """Write a folder ``SegGptForImageSegmentation.from_pretrained`` reads. Built aside, then moved in place."""
    from safetensors.torch import save_file

    dst = Path(path)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True (--overwrite) to replace it")
    hf_cfg = config_to_hf(config)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
        save_file(_contiguous(official_to_hf(sd)), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old")
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def convert(src: str | os.PathLike, dst: str | os.PathLike, to: str, overwrite: bool = False) -> Path:
    """Convert a checkpoint between formats. Tensors are copied bit for bit; round trips are exact."""
    if to not in FORMATS:
        raise ValueError(f"unknown format {to!r}; choose one of {FORMATS}")
    sd, cfg = read_checkpoint(src)
    load_state_dict_strict(
        _skeleton(cfg), sd, where=str(src), assign=True
    )  # refuse to write something that cannot load
    if to == "native":
        return save_native(sd, dst, config=cfg, overwrite=overwrite)
    if to == "official":
        return save_official(sd, dst, config=cfg, overwrite=overwrite)
    return save_hf(sd, cfg, dst, overwrite=overwrite)
