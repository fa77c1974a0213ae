"""One SynthContext object: its attributes drawn, its outline rasterised and its texture as a blend field.

:func:`random_object` draws a :class:`SceneObject` from a :class:`~seggpt.data.synth_vocab.Vocabulary`;
:func:`object_mask` rasterises its outline and :func:`texture_field` gives the blend between its two colours at
each pixel. Painting objects into scenes is :mod:`seggpt.data.synth`'s, which re-exports every public name here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from seggpt.data.synth_vocab import ATTRIBUTES, TEXTURES, Vocabulary, random_rgb, shape_polygons

Size = tuple[int, int]


@dataclass(frozen=True)
class SceneObject:
    """One object. Positions and sizes are in pixels of the scene it is drawn in."""

    shape: str
    texture: str
    colour: str
    rgb: tuple[float, float, float]  # main colour in [0, 255]
    rgb2: tuple[float, float, float]  # second colour of the pattern: a shade of the main one
    cx: float
    cy: float
    radius: float
    angle: float  # radians
    aspect: float  # anisotropic scale x / y, near 1 so a circle stays a circle
    tex_angle: float  # pattern direction in the object's frame, so the pattern turns with the object
    tex_period: float  # pattern period in pixels (a fraction of the radius)
    tex_seed: int

    def attribute(self, name: str) -> str:
        return getattr(self, name)


def random_object(
    rng: np.random.Generator,
    size: Size,
    vocab: Vocabulary,
    fixed: dict[str, str] | None = None,
    exclude: dict[str, str] | None = None,
    radius_range: tuple[float, float] = (0.08, 0.2),
) -> SceneObject:
    """An object with independent random attributes, some fixed (``fixed``) or forbidden (``exclude``).

    Args:
        size: (H, W) of the scene.
        radius_range: object radius as a fraction of min(H, W).
    """
    fixed = fixed or {}
    exclude = exclude or {}
    attrs = {}
    for name in ATTRIBUTES:
        if name in fixed:
            attrs[name] = fixed[name]
        else:
            attrs[name] = vocab.draw(rng, name, exclude=(exclude[name],) if name in exclude else ())
    h, w = size
    radius = rng.uniform(*radius_range) * min(h, w)
    rgb, rgb2 = random_rgb(rng, attrs["colour"])
    return SceneObject(
        shape=attrs["shape"],
        texture=attrs["texture"],
        colour=attrs["colour"],
        rgb=tuple(rgb),
        rgb2=tuple(rgb2),
        cx=rng.uniform(0.1 * w, 0.9 * w),
        cy=rng.uniform(0.1 * h, 0.9 * h),
        radius=radius,
        angle=rng.uniform(0, 2 * math.pi),
        aspect=float(np.exp(rng.uniform(-0.12, 0.12))),
        tex_angle=rng.uniform(0, math.pi),
        tex_period=rng.uniform(0.25, 0.5) * radius,
        tex_seed=int(rng.integers(1 << 30)),
    )


def _transform(obj: SceneObject, pts: np.ndarray) -> np.ndarray:
    c, s = math.cos(obj.angle), math.sin(obj.angle)
    sx = obj.radius * math.sqrt(obj.aspect)
    sy = obj.radius / math.sqrt(obj.aspect)
    x = pts[:, 0] * sx
    y = pts[:, 1] * sy
    return np.stack([obj.cx + c * x - s * y, obj.cy + s * x + c * y], 1)


def object_mask(obj: SceneObject, size: Size) -> tuple[np.ndarray, tuple[slice, slice]] | None:
    """Rasterise an object: its boolean mask inside its bounding box and the box, or None when off-canvas."""
    h, w = size
    polys = [(_transform(obj, p), f) for p, f in shape_polygons(obj.shape)]
    outer = polys[0][0]
    x0, y0 = np.floor(outer.min(0)).astype(int)
    x1, y1 = np.ceil(outer.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(canvas)
    for p, fill in polys:
        draw.polygon([(float(a - x0), float(b - y0)) for a, b in p], fill=fill)
    mask = np.asarray(canvas, dtype=bool)
    return mask, (slice(y0, y1), slice(x0, x1))


def _hash01(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    # A cheap deterministic hash of integer lattice points -> [0, 1): patterns attached to the object, so they
    # move with it between views and frames (an rng draw per pixel would flicker).
    v = np.sin(a * 12.9898 + b * 78.233 + (seed % 10007) * 0.618) * 43758.5453
    return v - np.floor(v)


def _value_noise(u: np.ndarray, v: np.ndarray, cell: float, seed: int) -> np.ndarray:
    gu, gv = u / cell, v / cell
    iu, iv = np.floor(gu), np.floor(gv)
    fu, fv = gu - iu, gv - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    n00, n10 = _hash01(iu, iv, seed), _hash01(iu + 1, iv, seed)
    n01, n11 = _hash01(iu, iv + 1, seed), _hash01(iu + 1, iv + 1, seed)
    return (n00 * (1 - fu) + n10 * fu) * (1 - fv) + (n01 * (1 - fu) + n11 * fu) * fv


def texture_field(texture: str, u: np.ndarray, v: np.ndarray, period: float, angle: float, seed: int) -> np.ndarray:
    """Blend weight in [0, 1] between an object's two colours at local coordinates (u, v) (pixels, object frame).

    Args:
        u, v: (h, w) coordinates relative to the object centre, rotated with the object.
        period: pattern period in pixels; angle: pattern direction in the object frame.
    """
    ca, sa = math.cos(angle), math.sin(angle)
    a = u * ca + v * sa
    b = -u * sa + v * ca
    if texture == "solid":
        return np.zeros_like(u)
    if texture == "stripes":
        return ((a / period) % 1.0 < 0.5).astype(np.float32)
    if texture == "checker":
        return ((np.floor(a / period) + np.floor(b / period)) % 2).astype(np.float32)
    if texture == "dots":
        fa = (a / period) % 1.0 - 0.5
        fb = (b / period) % 1.0 - 0.5
        return (fa * fa + fb * fb < 0.09).astype(np.float32)
    if texture == "gradient":
        # Over a span tied to the object (period ~ radius / 3), not to the visible box, so a cropped or
        # half-hidden object keeps its shading.
        return np.clip(0.5 + a / (6 * period), 0, 1)
    if texture == "noise":
        return np.clip((_value_noise(a, b, period * 0.8, seed) - 0.5) * 2.2 + 0.5, 0, 1)
    if texture == "zigzag":
        tri = np.abs((b / period) % 1.0 - 0.5) * 2  # triangle wave along the stripes
        return (((a / period) + 0.6 * tri) % 1.0 < 0.5).astype(np.float32)
    if texture == "speckle":
        return (_hash01(np.floor(a / 2), np.floor(b / 2), seed) < 0.4).astype(np.float32)
    if texture == "rings":
        return ((np.sqrt(u * u + v * v) / period) % 1.0 < 0.5).astype(np.float32)
    if texture == "grid":
        fa = (a / period) % 1.0
        fb = (b / period) % 1.0
        return ((fa < 0.22) | (fb < 0.22)).astype(np.float32)
    raise ValueError(f"unknown texture {texture!r}; choose one of {TEXTURES}")
