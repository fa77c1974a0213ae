"""Which patches of the mask canvas the model must paint (``bool_masked_pos``).

Painter's recipe, which SEGGPT.md records as the authors' trainer (not confirmed for SegGPT itself): with
probability ``half_prob`` the whole lower half (the query, exactly what inference asks) is masked; otherwise
rectangular blocks of patches are masked anywhere on the canvas until ``block_ratio`` of all patches are.
Our defaults: ``half_prob = 0.1`` (as recorded) and ``block_ratio = 0.5`` (as many patches as the query half
has, so the loss sees the same amount of work either way; the authors' value is not published).
Set ``half_prob = 1`` to train on the inference task only (what a small model on a short budget wants).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaskingConfig:
    # Probability of masking the whole query half; otherwise block-wise random masking.
    half_prob: float = 0.1
    # Fraction of canvas patches masked by block masking (always reached exactly).
    block_ratio: float = 0.5
    # Smallest block, in patches, and the aspect-ratio range of blocks (h / w).
    min_block: int = 4
    aspect: tuple[float, float] = (0.3, 1 / 0.3)
    # Loss weight of foreground pixels (label > 0) relative to background. 1.0 is the paper's uniform loss.
    # Above 1 it keeps a small model trained briefly from settling on "everything is background" when objects
    # cover a few percent of the image (the near-L1 loss then predicts foreground where P(fg) > 1 / (1 + w)).
    foreground_weight: float = 1.0
    # Loss weight of a label that covers little of its pair: min(small_cap, small_area / fraction) on its pixels
    # (at least 1), so that thin and small classes (poles, signs, a distant pedestrian) are not worth ignoring.
    # small_cap 1.0 (the default) turns it off.
    small_cap: float = 1.0
    small_area: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.half_prob <= 1.0:
            raise ValueError(f"masking.half_prob must be in [0, 1], got {self.half_prob}")
        if not 0.0 < self.block_ratio < 1.0:
            raise ValueError(f"masking.block_ratio must be in (0, 1), got {self.block_ratio}")
        if self.foreground_weight <= 0:
            raise ValueError(f"masking.foreground_weight must be > 0, got {self.foreground_weight}")
        if self.small_cap < 1.0:
            raise ValueError(f"masking.small_cap must be >= 1 (1 turns it off), got {self.small_cap}")
        if not 0.0 < self.small_area <= 1.0:
            raise ValueError(f"masking.small_area must be in (0, 1], got {self.small_area}")


def half_mask(grid: tuple[int, int]) -> np.ndarray:
    """(Hp * Wp,) bool, True on the lower half of the token grid (the query)."""
    hp, wp = grid
    m = np.zeros((hp, wp), bool)
    m[hp // 2 :] = True
    return m.reshape(-1)


def block_mask(grid: tuple[int, int], ratio: float, rng: np.random.Generator, cfg: MaskingConfig) -> np.ndarray:
    """Block-wise random mask over the whole canvas: (Hp * Wp,) bool with exactly round(ratio * Hp * Wp) True.

    Rectangles of random area and aspect are placed until the target is reached; if a rectangle can no longer
    fit without overshooting, single random patches top the count up, so every sample carries the same number
    of masked patches (the loss normalises per sample, this keeps samples equally weighted).
    """
    hp, wp = grid
    n = hp * wp
    target = int(round(ratio * n))
    mask = np.zeros((hp, wp), bool)
    count = 0
    log_a = (math.log(cfg.aspect[0]), math.log(cfg.aspect[1]))
    failures = 0
    while count < target and failures < 10:
        remaining = target - count
        lo = min(cfg.min_block, remaining)
        area = rng.uniform(lo, max(lo, remaining))
        aspect = math.exp(rng.uniform(*log_a))
        h = int(round(math.sqrt(area * aspect)))
        w = int(round(math.sqrt(area / aspect)))
        if not (1 <= h <= hp and 1 <= w <= wp):
            failures += 1
            continue
        top = int(rng.integers(0, hp - h + 1))
        left = int(rng.integers(0, wp - w + 1))
        new = h * w - int(mask[top : top + h, left : left + w].sum())
        if 0 < new <= remaining:
            mask[top : top + h, left : left + w] = True
            count += new
            failures = 0
        else:
            failures += 1
    flat = mask.reshape(-1)
    if count < target:
        free = np.flatnonzero(~flat)
        flat[rng.choice(free, size=target - count, replace=False)] = True
    return flat


def sample_mask(grid: tuple[int, int], rng: np.random.Generator, cfg: MaskingConfig) -> np.ndarray:
    """One training ``bool_masked_pos`` (Hp * Wp,) following :class:`MaskingConfig`."""
    if rng.random() < cfg.half_prob:
        return half_mask(grid)
    return block_mask(grid, cfg.block_ratio, rng, cfg)
