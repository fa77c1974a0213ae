"""Colours that stand for classes and instances, shared by training and inference.

SegGPT reads and writes masks as RGB images. At inference a multi-class mask is painted with a fixed palette
and the answer is decoded back to labels by the nearest palette colour. In training the colours are drawn at
random for every pair, so the model must read the mapping from the example rather than memorise colours.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def build_palette(num_labels: int) -> np.ndarray:
    """The ``transformers``-compatible palette: (num_labels + 1, 3) uint8, row 0 black (background).

    Colours sit on a regular grid in RGB with ``base = int(n ** (1/3)) + 1`` levels per channel, starting from
    white, so they are as far apart as a grid allows.
    """
    if num_labels < 0:
        raise ValueError(f"num_labels must be >= 0, got {num_labels}")
    base = int(num_labels ** (1 / 3)) + 1
    margin = 256 // base
    loc = np.arange(num_labels)
    digits = np.stack([loc // base**2, (loc % base**2) // base, loc % base], axis=1)
    colours = 255 - digits * margin
    return np.concatenate([np.zeros((1, 3), np.int64), colours]).astype(np.uint8)


def min_palette_distance(palette: np.ndarray) -> float:
    """Smallest L2 distance between two palette colours (how separable the classes are)."""
    p = palette.astype(np.float64)
    d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))
    d[np.diag_indices_from(d)] = np.inf
    return float(d.min()) if len(p) > 1 else float("inf")


def paint(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Label map (H, W) ints in [0, len(palette)) -> colour mask (H, W, 3) uint8."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= len(palette)):
        raise ValueError(
            f"labels span [{labels.min()}, {labels.max()}] but the palette has {len(palette)} colours "
            f"(labels 0..{len(palette) - 1})"
        )
    return palette[labels]


def decode(colours: Tensor, palette: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest palette colour for every pixel.

    Args:
        colours: (..., 3) predicted colours in [0, 255], any float dtype.
        palette: (K, 3) palette colours.

    Returns:
        labels (...) long, index of the nearest colour; distance (...) float, the L2 distance to it in [0, 441],
        usable as a per-pixel confidence (0 is a perfect match).
    """
    c = colours.float()
    p = palette.to(device=c.device, dtype=torch.float32)
    # |c - p|^2 = |c|^2 - 2 c.p + |p|^2, without materialising (..., K, 3).
    d2 = (c * c).sum(-1, keepdim=True) - 2 * c @ p.T + (p * p).sum(-1)
    d2, labels = d2.min(dim=-1)
    return labels, d2.clamp_min(0).sqrt()


def random_palette(num_colours: int, rng: np.random.Generator, min_distance: float = 60.0) -> np.ndarray:
    """Distinct random colours for the foreground ids of one training pair: (num_colours, 3) uint8.

    Background stays black (the convention at inference); colours are rejected when closer than
    ``min_distance`` to black or to one another, relaxing the bound if the space gets crowded.
    """
    chosen: list[np.ndarray] = []
    bound = min_distance
    tries = 0
    while len(chosen) < num_colours:
        c = rng.integers(0, 256, size=3)
        ok = np.linalg.norm(c) >= bound and all(np.linalg.norm(c - o) >= bound for o in chosen)
        tries += 1
        if ok:
            chosen.append(c)
        elif tries > 200:
            bound *= 0.8  # too many ids for this separation: accept closer colours rather than loop forever
            tries = 0
    return np.array(chosen, dtype=np.uint8).reshape(num_colours, 3)


def random_colouring(labels: np.ndarray, rng: np.random.Generator, ignore: int | None = None) -> np.ndarray:
    """Paint a label map with fresh random colours: (H, W) ints -> (H, W, 3) uint8.

    Label 0 is background (black); every other id present gets its own random colour. ``ignore`` pixels are
    painted black too (the caller masks them out of the loss with ``valid``). The label structure is kept:
    two pixels share a colour exactly when they share a label.
    """
    ids = [int(i) for i in np.unique(labels) if i != 0 and i != ignore]
    return paint_with(labels, colouring_for_ids(ids, rng))


def colouring_for_ids(ids: list[int], rng: np.random.Generator) -> dict[int, np.ndarray]:
    """One random colour per id, to paint several label maps (an example and its query) the same way."""
    colours = random_palette(len(ids), rng)
    return {i: colours[k] for k, i in enumerate(ids)}


def paint_with(labels: np.ndarray, mapping: dict[int, np.ndarray]) -> np.ndarray:
    """Paint a label map with an id -> colour mapping; ids not in it (and 0) stay black."""
    out = np.zeros(labels.shape + (3,), np.uint8)
    for i, c in mapping.items():
        out[labels == i] = c
    return out
