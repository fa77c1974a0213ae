"""AdamW parameter groups with layer-wise learning-rate decay, and the warm-up + cosine schedule."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

# Tokens and tables that are embeddings, not weights: no weight decay (as in MAE/BEiT/Painter).
_NO_DECAY_NAMES = ("mask_token", "segment_token_x", "segment_token_y", "type_token_cls", "type_token_ins", "pos_embed")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def layer_id(name: str, depth: int) -> int:
    """Embeddings (patch embed, tokens, pos embed) -> 0; ``blocks.i.*`` -> i + 1; norm and decoder -> depth + 1."""
    m = _BLOCK.search(name)
    if m:
        return int(m.group(1)) + 1
    leaf = name.split(".")[-1]
    if name.startswith(("patch_embed", "module.patch_embed")) or leaf in _NO_DECAY_NAMES:
        return 0
    return depth + 1


def _matches(name: str, prefix: str) -> bool:
    bare = name.removeprefix("module.")  # DDP's wrapper
    prefix = prefix.rstrip(".")
    return bare == prefix or bare.startswith(prefix + ".")


def _prefix_scale(name: str, lr_scales: dict[str, float]) -> float:
    hits = [p for p in lr_scales if _matches(name, p)]
    return float(lr_scales[max(hits, key=len)]) if hits else 1.0


def param_groups(
    model: nn.Module, weight_decay: float, layer_decay: float, depth: int, lr_scales: dict[str, float] | None = None
) -> list[dict]:
    """AdamW groups keyed by (layer, decay?, prefix scale): each carries
    ``lr_scale = layer_decay ** (depth + 1 - layer)``, times ``lr_scales[prefix]`` for parameters whose name starts
    with that prefix (the longest matching prefix; a prefix that matches nothing is refused, as a typo would be).

    Biases, norms (1-D parameters) and the embedding tokens get no weight decay.
    """
    lr_scales = dict(lr_scales or {})
    bad = {k: v for k, v in lr_scales.items() if not float(v) > 0}
    if bad:
        raise ValueError(f"optim.lr_scales must be > 0, got {bad}")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    unused = sorted(k for k in lr_scales if not any(_matches(n, k) for n in names))
    if unused:
        raise ValueError(
            f"optim.lr_scales prefixes {unused} match no trainable parameter of this model "
            f"(names look like {names[0]!r}, {names[-1]!r})"
        )
    groups: dict[tuple[int, bool, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, depth)
        decay = p.ndim > 1 and name.split(".")[-1] not in _NO_DECAY_NAMES
        extra = _prefix_scale(name, lr_scales)
        g = groups.setdefault(
            (lid, decay, extra),
            {
                "params": [],
                "names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": layer_decay ** (depth + 1 - lid) * extra,
                "layer": lid,
            },
        )
        g["params"].append(p)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


class WarmupCosine:
    """lr(step): linear warm-up from 0 to ``lr`` over ``warmup`` steps, then cosine down to ``min_lr`` at ``total``."""

    def __init__(self, lr: float, total: int, warmup: int = 0, min_lr: float = 0.0) -> None:
        self.lr, self.total, self.warmup, self.min_lr = lr, total, warmup, min_lr

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        t = min(1.0, (step - self.warmup) / span)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's lr for ``step`` (times its layer-decay scale); returns the base lr."""
        lr = self(step)
        for g in optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        return lr

    def state_dict(self) -> dict:
        return {"lr": self.lr, "total": self.total, "warmup": self.warmup, "min_lr": self.min_lr}
