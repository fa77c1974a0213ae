"""Augmentation written by hand (no torchvision): random resized crop, horizontal flip, colour jitter.

Geometric transforms are applied identically to an image and its label map (bicubic for the image, nearest
for labels, so no new ids appear); colour jitter touches the image only. Every function takes the generator
it draws from, so a pair is a pure function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from seggpt.data.base import IGNORE


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of one transformed view (the paper's "random resize crop, colour jitter, horizontal flip")."""

    # Fraction of the image area kept by the crop, and the crop's aspect-ratio range (w / h).
    scale: tuple[float, float] = (0.3, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    # Colour jitter strengths (0 disables): factors drawn uniformly in [1 - s, 1 + s]; hue shift in [-h, h] turns.
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.0
    # Probability that a view is jittered at all.
    jitter_prob: float = 0.8


def crop_box(
    height: int, width: int, rng: np.random.Generator, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """A random (left, top, right, bottom) box covering ``scale`` of the area with aspect ``ratio`` (w/h)."""
    area = height * width
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_r))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    # Fallback: the largest central crop within the ratio range (as torchvision does).
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def resize_pair(
    image: np.ndarray, labels: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``box`` (default: all) and resize to ``size`` (h, w): bicubic image, nearest labels."""
    h, w = size
    if box is None and image.shape[:2] == (h, w) and labels.shape == (h, w):
        return image, labels
    img = Image.fromarray(np.ascontiguousarray(image))
    out_img = np.asarray(img.resize((w, h), Image.BICUBIC, box=box))
    # Mode "I" holds int32 label maps (ids beyond 255, and IGNORE = -1); nearest never invents ids.
    lab = Image.fromarray(np.ascontiguousarray(labels, dtype=np.int32), mode="I")
    out_lab = np.asarray(lab.resize((w, h), Image.NEAREST, box=box)).astype(np.int32)
    return out_img, out_lab


def colour_jitter(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Brightness, contrast, saturation (and optionally hue) in a random order; (h, w, 3) uint8 -> same."""
    x = image.astype(np.float32)
    ops = ["b", "c", "s"] + (["h"] if cfg.hue > 0 else [])
    for op in rng.permutation(ops):
        if op == "b" and cfg.brightness > 0:
            x = x * rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
        elif op == "c" and cfg.contrast > 0:
            grey_mean = (x @ np.array([0.299, 0.587, 0.114], np.float32)).mean()
            f = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
            x = (x - grey_mean) * f + grey_mean
        elif op == "s" and cfg.saturation > 0:
            grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
            f = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
            x = (x - grey) * f + grey
        elif op == "h":
            # Rotate colours about the grey axis: a cheap hue shift without an HSV round trip.
            theta = rng.uniform(-cfg.hue, cfg.hue) * 2 * math.pi
            c, s = math.cos(theta), math.sin(theta)
            k = 1 / 3
            sq = math.sqrt(k)
            rot = np.array(
                [
                    [c + (1 - c) * k, k * (1 - c) - sq * s, k * (1 - c) + sq * s],
                    [k * (1 - c) + sq * s, c + k * (1 - c), k * (1 - c) - sq * s],
                    [k * (1 - c) - sq * s, k * (1 - c) + sq * s, c + k * (1 - c)],
                ],
                np.float32,
            )
            x = x @ rot.T
        x = np.clip(x, 0, 255)
    return x.astype(np.uint8)


def random_view(
    image: np.ndarray,
    labels: np.ndarray,
    size: tuple[int, int],
    rng: np.random.Generator,
    cfg: AugmentConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One transformed view: random resized crop to ``size`` (h, w), flip, colour jitter.

    Args:
        image: (H, W, 3) uint8.
        labels: (H, W) int label map (0 background, ids, IGNORE).
        size: output (h, w).

    Returns:
        (h, w, 3) uint8 image and (h, w) int32 labels.
    """
    cfg = cfg or AugmentConfig()
    h, w = labels.shape
    box = crop_box(h, w, rng, cfg.scale, cfg.ratio)
    img, lab = resize_pair(image, labels, size, box)
    if rng.random() < cfg.hflip:
        img, lab = img[:, ::-1], lab[:, ::-1]
    if rng.random() < cfg.jitter_prob:
        img = colour_jitter(img, rng, cfg)
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def present_ids(labels: np.ndarray) -> set[int]:
    """Foreground ids in a label map (neither background 0 nor IGNORE)."""
    ids = np.unique(labels)
    return {int(i) for i in ids if i != 0 and i != IGNORE}
