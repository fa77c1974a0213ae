"""What a SynthContext object can be: its shapes, textures and colours, and the held-out split.

Pure data and draws from it, nothing rendered: the named shape outlines (polygons in unit coordinates, holes
cut by fill 0), the endless family of procedural ``random:<seed>`` shapes, the texture and colour names, and
:func:`vocabulary`, which says what the ``train`` and ``eval`` splits may draw. :mod:`seggpt.data.synth` is the
world built from them and re-exports every public name here.
"""

from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass

import numpy as np

# Never shown in training; the categories of the "eval" split. Chosen to be unlike every training shape and
# texture, so they are novel rather than near-duplicates (a held-out hexagon would be a pentagon in disguise).
HELD_OUT_SHAPES: tuple[str, ...] = ("heart", "crescent", "arrow", "t_shape")
HELD_OUT_TEXTURES: tuple[str, ...] = ("rings", "grid")

# name -> hue in degrees (None: achromatic), saturation range, value range
_COLOUR_SPECS: dict[str, tuple[float | None, tuple[float, float], tuple[float, float]]] = {
    "red": (0.0, (0.75, 1.0), (0.7, 1.0)),
    "orange": (28.0, (0.8, 1.0), (0.85, 1.0)),
    "yellow": (55.0, (0.7, 1.0), (0.85, 1.0)),
    "green": (120.0, (0.6, 1.0), (0.55, 0.95)),
    "cyan": (182.0, (0.6, 1.0), (0.75, 1.0)),
    "blue": (228.0, (0.65, 1.0), (0.65, 1.0)),
    "purple": (278.0, (0.55, 0.9), (0.5, 0.9)),
    "pink": (322.0, (0.35, 0.65), (0.9, 1.0)),
    "white": (None, (0.0, 0.06), (0.92, 1.0)),
    "black": (None, (0.0, 0.1), (0.05, 0.16)),
}
COLOURS: tuple[str, ...] = tuple(_COLOUR_SPECS)


def random_rgb(rng: np.random.Generator, colour: str) -> tuple[np.ndarray, np.ndarray]:
    """An object's two colours in [0, 255] for a colour name: the main one (hue jittered) and a shade of it."""
    hue, (s0, s1), (v0, v1) = _COLOUR_SPECS[colour]
    h = ((hue + rng.uniform(-8, 8)) / 360.0) % 1.0 if hue is not None else rng.random()
    rgb = np.array(colorsys.hsv_to_rgb(h, rng.uniform(s0, s1), rng.uniform(v0, v1))) * 255
    # The pattern's second colour is a shade of the first, so an object's hue stays readable as its colour.
    if colour == "black":
        rgb2 = rgb + (255 - rgb) * rng.uniform(0.3, 0.45)
    elif colour == "white":
        rgb2 = rgb * rng.uniform(0.55, 0.7)
    else:
        rgb2 = rgb * rng.uniform(0.35, 0.6)
    return rgb, rgb2


def _regular(k: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    t = phase + 2 * math.pi * np.arange(k) / k
    return np.stack([np.cos(t), np.sin(t)], 1) * radius


def _star(k: int, inner: float) -> np.ndarray:
    t = -math.pi / 2 + math.pi * np.arange(2 * k) / k
    r = np.where(np.arange(2 * k) % 2 == 0, 1.0, inner)
    return np.stack([np.cos(t) * r, np.sin(t) * r], 1)


def _arc(t0: float, t1: float, n: int = 40) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([np.cos(t), np.sin(t)], 1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    p = np.stack([x, y], 1)
    p -= (p.max(0) + p.min(0)) / 2
    return p / np.abs(p).max()


def _poly(xy: str) -> np.ndarray:
    # "x0 y0 x1 y1 ..." -> (N, 2): vertices in unit coordinates, y pointing down.
    return np.array(xy.split(), np.float64).reshape(-1, 2)


_CIRCLE = _regular(48, phase=0.0)
# Each shape is a list of (polygon in unit coordinates, fill): fill 1 paints, fill 0 cuts a hole afterwards.
_SHAPE_POLYGONS: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_CIRCLE, 1)],
    "ellipse": [(_CIRCLE * [1.0, 0.55], 1)],
    "semicircle": [(_arc(0, math.pi) - [0, 0.42], 1)],
    "triangle": [(_regular(3) + [0, 0.2], 1)],
    "square": [(_regular(4, 1.0, math.pi / 4), 1)],
    "rectangle": [(_poly("-1 -0.5 1 -0.5 1 0.5 -1 0.5"), 1)],
    "diamond": [(_poly("0 -1 0.6 0 0 1 -0.6 0"), 1)],
    "trapezoid": [(_poly("-1 0.55 1 0.55 0.45 -0.55 -0.45 -0.55"), 1)],
    "pentagon": [(_regular(5), 1)],
    "hexagon": [(_regular(6), 1)],
    "star4": [(_star(4, 0.38), 1)],
    "star5": [(_star(5, 0.45), 1)],
    "star6": [(_star(6, 0.55), 1)],
    "cross": [(_poly("-.3 -1  .3 -1  .3 -.3  1 -.3  1 .3  .3 .3  .3 1  -.3 1  -.3 .3  -1 .3  -1 -.3  -.3 -.3"), 1)],
    "ring": [(_CIRCLE, 1), (_CIRCLE * 0.55, 0)],
    "frame": [(_regular(4, 1.0, math.pi / 4), 1), (_regular(4, 0.62, math.pi / 4), 0)],
    "l_shape": [(_poly("-0.75 -1 -0.2 -1 -0.2 0.45 0.75 0.45 0.75 1 -0.75 1"), 1)],
    "chevron": [(_poly("-1 -0.2 0 -0.9 1 -0.2 1 0.35 0 -0.35 -1 0.35") + [0, 0.27], 1)],
    "drop": [(np.concatenate([_arc(-math.pi / 6, 7 * math.pi / 6) * 0.7 + [0, 0.3], [[0, -1.0]]]), 1)],
    "bowtie": [(_poly("-1 -0.8 0 -0.15 1 -0.8 1 0.8 0 0.15 -1 0.8"), 1)],
    # held out
    "heart": [(_heart(), 1)],
    "crescent": [(_CIRCLE, 1), (_CIRCLE * 0.85 + [0.45, -0.1], 0)],
    "arrow": [(_poly("-1 -0.2 0.15 -0.2 0.15 -0.6 1 0 0.15 0.6 0.15 0.2 -1 0.2"), 1)],
    "t_shape": [(_poly("-1 -1 1 -1 1 -0.5 0.25 -0.5 0.25 1 -0.25 1 -0.25 -0.5 -1 -0.5"), 1)],
}
SHAPES: tuple[str, ...] = tuple(_SHAPE_POLYGONS)
TEXTURES: tuple[str, ...] = (
    *("solid", "stripes", "checker", "dots", "gradient", "noise", "zigzag", "speckle"),
    *("rings", "grid"),
)
ATTRIBUTES: tuple[str, ...] = ("shape", "texture", "colour")

TRAIN_SHAPES: tuple[str, ...] = tuple(s for s in SHAPES if s not in HELD_OUT_SHAPES)

# Procedural shapes "random:<seed>": an endless family of star-shaped polygons and smooth blobs, one exact
# outline per seed. Training draws them as categories and distractors so the model learns to match *an*
# outline to the example's, not to recognise twenty named ones: that is what novel categories need.
RANDOM_SHAPE_PREFIX = "random:"


def random_shape_name(rng: np.random.Generator) -> str:
    return f"{RANDOM_SHAPE_PREFIX}{int(rng.integers(1 << 24))}"


@functools.lru_cache(maxsize=4096)
def _random_shape(seed: int) -> np.ndarray:
    g = np.random.default_rng([7919, seed])
    if seed % 2:
        # Polygon: 5..9 vertices at jittered angles and radii.
        k = int(g.integers(5, 10))
        t = 2 * math.pi * (np.arange(k) + g.uniform(-0.3, 0.3, k)) / k
        r = g.uniform(0.45, 1.0, k)
    else:
        # Blob: a radius that is a low-order Fourier series of the angle.
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        r = np.ones_like(t)
        for j in range(1, 5):
            r += g.uniform(-0.28, 0.28) / j**0.5 * np.cos(j * t + g.uniform(0, 2 * math.pi))
        r = np.clip(r, 0.3, None)
    p = np.stack([np.cos(t) * r, np.sin(t) * r], 1)
    return p / np.abs(p).max()


def shape_polygons(shape: str) -> list[tuple[np.ndarray, int]]:
    """The outline of a shape in unit coordinates: (polygon, fill) pairs, fill 0 cutting holes."""
    if shape.startswith(RANDOM_SHAPE_PREFIX):
        return [(_random_shape(int(shape[len(RANDOM_SHAPE_PREFIX) :])), 1)]
    return _SHAPE_POLYGONS[shape]


TRAIN_TEXTURES: tuple[str, ...] = tuple(t for t in TEXTURES if t not in HELD_OUT_TEXTURES)
SPLITS = ("train", "eval")
P_RANDOM_SHAPE = 0.3  # training only: the eval split uses exactly the held-out named shapes


@dataclass(frozen=True)
class Vocabulary:
    """The attribute values a split may draw: ``categories`` for what is segmented, the rest for everything."""

    shapes: tuple[str, ...]
    textures: tuple[str, ...]
    colours: tuple[str, ...]
    category_values: dict[str, tuple[str, ...]]
    # Chance that a shape (category or not) is a procedural "random:<seed>" one instead of a named one.
    p_random_shape: float = 0.0

    def values(self, attribute: str) -> tuple[str, ...]:
        return {"shape": self.shapes, "texture": self.textures, "colour": self.colours}[attribute]

    def draw(
        self, rng: np.random.Generator, attribute: str, exclude: tuple[str, ...] = (), category: bool = False
    ) -> str:
        """One value of ``attribute`` not in ``exclude``: a category value when ``category``, else any value."""
        if attribute == "shape" and self.p_random_shape > 0 and rng.random() < self.p_random_shape:
            return random_shape_name(rng)
        pool = self.category_values[attribute] if category else self.values(attribute)
        pool = [v for v in pool if v not in exclude]
        return pool[int(rng.integers(len(pool)))]

    def is_value(self, attribute: str, value: str, category: bool = False) -> bool:
        if attribute == "shape" and self.p_random_shape > 0 and value.startswith(RANDOM_SHAPE_PREFIX):
            return True
        return value in (self.category_values.get(attribute, ()) if category else self.values(attribute))


def vocabulary(split: str) -> Vocabulary:
    """What a split draws. ``train`` never sees a held-out shape or texture anywhere; ``eval`` segments only the
    held-out ones (and may show any value as a distractor)."""
    if split == "train":
        return Vocabulary(
            TRAIN_SHAPES,
            TRAIN_TEXTURES,
            COLOURS,
            {"shape": TRAIN_SHAPES, "texture": TRAIN_TEXTURES, "colour": COLOURS},
            p_random_shape=P_RANDOM_SHAPE,
        )
    if split == "eval":
        return Vocabulary(SHAPES, TEXTURES, COLOURS, {"shape": HELD_OUT_SHAPES, "texture": HELD_OUT_TEXTURES})
    raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
