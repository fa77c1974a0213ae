"""SynthContext: a procedural world of in-context segmentation tasks, seeded and reproducible.

No pretrained SegGPT can be downloaded here, so the embedded model learns from data this module makes. A scene
is a background with objects drawn in z-order; every object has independent attributes:

    shape    one of a family of polygons and curves (:data:`SHAPES`)
    texture  the pattern inside the object, in shades of its colour (:data:`TEXTURES`)
    colour   a named hue (:data:`COLOURS`), jittered
    pose     position, size, rotation, a little anisotropic scale
    z-order  later objects occlude earlier ones; every mask is the *visible* part

A *category* is one attribute value: all stars whatever their colour, all striped things whatever their shape,
all red things. Distractors differ in that attribute but may share the others, so a single example is often
ambiguous (is the red striped star an example of "star", "red" or "striped"?) and more examples resolve it:
the situation where context ensembles matter.

Held-out split: :data:`HELD_OUT_SHAPES` and :data:`HELD_OUT_TEXTURES` are never drawn in training (not as the
category, not as a distractor, not in a background); the ``"eval"`` split uses them as the categories, the
way FSS-1000 serves as novel categories for SegGPT.

Samplers (all take a ``numpy.random.Generator`` and use nothing else, so a seed fixes the output):

    :func:`sample_semantic`       k examples + 1 query of one category (binary masks)
    :func:`sample_multiclass`     two or three categories of one attribute kind, label maps 0..n
    :func:`sample_contrast_pair`  an example and a query where copying the example's look fails (training)
    :func:`sample_instance`       two transformed views of one scene, instance ids consistent across views
    :func:`sample_video`          frames with objects that move, turn, occlude, leave and come back

Images are (H, W, 3) uint8, masks and label maps (H, W) uint8 (0 = background). Rendering is numpy plus PIL's
polygon filler; a 128x128 pair takes 4-6 ms on one core (``python -m seggpt.data.synth`` measures it).

Where things are: :mod:`seggpt.data.synth_vocab` says what an object can be (shapes, textures, colours, the
held-out split), :mod:`seggpt.data.synth_objects` draws and rasterises one object, and this module paints them
into scenes and draws the tasks, the videos and the training source. Import everything from here.
"""

from __future__ import annotations

import colorsys
import math
import time
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

from seggpt.data.base import INSTANCE, SEMANTIC, Pair

# The vocabulary and the single object live in their own modules; this module is the one public namespace of
# SynthContext, so they are re-exported here (and looked up here: painting calls this module's object_mask and
# texture_field).
from seggpt.data.synth_objects import (  # noqa: F401
    SceneObject,
    Size,
    object_mask,
    random_object,
    texture_field,
)
from seggpt.data.synth_vocab import (  # noqa: F401
    ATTRIBUTES,
    COLOURS,
    HELD_OUT_SHAPES,
    HELD_OUT_TEXTURES,
    P_RANDOM_SHAPE,
    RANDOM_SHAPE_PREFIX,
    SHAPES,
    SPLITS,
    TEXTURES,
    TRAIN_SHAPES,
    TRAIN_TEXTURES,
    Vocabulary,
    random_rgb,
    random_shape_name,
    shape_polygons,
    vocabulary,
)

# ----------------------------------------------------------------------------------------------------------
# Painting objects
# ----------------------------------------------------------------------------------------------------------


def paint_object(image: np.ndarray, labels: np.ndarray, obj: SceneObject, label: int) -> None:
    """Draw ``obj`` over ``image`` (H, W, 3) float32 and write ``label`` into its visible pixels of ``labels``."""
    hit = object_mask(obj, image.shape[:2])
    if hit is None:
        return
    mask, (ys, xs) = hit
    yy, xx = np.mgrid[ys, xs].astype(np.float32)
    dx, dy = xx - obj.cx, yy - obj.cy
    c, s = math.cos(obj.angle), math.sin(obj.angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    t = texture_field(obj.texture, u, v, obj.tex_period, obj.tex_angle, obj.tex_seed)[mask]
    rgb, rgb2 = np.asarray(obj.rgb, np.float32), np.asarray(obj.rgb2, np.float32)
    region = image[ys, xs]
    region[mask] = rgb * (1 - t[:, None]) + rgb2 * t[:, None]
    labels[ys, xs][mask] = label


# ----------------------------------------------------------------------------------------------------------
# Backgrounds
# ----------------------------------------------------------------------------------------------------------

BACKGROUNDS: tuple[str, ...] = ("solid", "gradient", "noise", "texture", "clutter")


def _muted_rgb(rng: np.random.Generator) -> np.ndarray:
    # Backgrounds are less saturated than objects on average, but not always: clutter and saturated fields
    # keep the model from learning "saturated = foreground".
    sat = rng.uniform(0.0, 0.45) if rng.random() < 0.8 else rng.uniform(0.45, 1.0)
    return np.array(colorsys.hsv_to_rgb(rng.random(), sat, rng.uniform(0.1, 0.95))) * 255


def _upsampled_noise(rng: np.random.Generator, size: Size, cells: int) -> np.ndarray:
    h, w = size
    small = (rng.random((cells, cells)) * 255).astype(np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    return np.asarray(img, np.float32) / 255.0


def random_background(rng: np.random.Generator, size: Size, vocab: Vocabulary, kind: str | None = None) -> np.ndarray:
    """A (H, W, 3) float32 background in [0, 255]: solid, gradient, noise, a large texture, or clutter."""
    h, w = size
    kind = kind or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    c1, c2 = _muted_rgb(rng), _muted_rgb(rng)
    if kind == "solid":
        return np.broadcast_to(c1.astype(np.float32), (h, w, 3)).copy()
    if kind == "gradient":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(a) + yy * math.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        return (c1 * (1 - t[..., None]) + c2 * t[..., None]).astype(np.float32)
    if kind == "noise":
        t = _upsampled_noise(rng, size, int(rng.integers(3, 12)))
        return (c1 * (1 - t[..., None]) + c2 * t[..., None]).astype(np.float32)
    if kind == "texture":
        # A training texture at a scale larger than objects use, in low contrast.
        tex = [t for t in vocab.textures if t in TRAIN_TEXTURES and t not in ("solid", "gradient")]
        tex_name = tex[int(rng.integers(len(tex)))]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = texture_field(tex_name, xx, yy, rng.uniform(0.06, 0.2) * min(h, w), rng.uniform(0, math.pi), 7)
        c2 = c1 + (c2 - c1) * rng.uniform(0.15, 0.5)
        return (c1 * (1 - t[..., None]) + c2 * t[..., None]).astype(np.float32)
    if kind == "clutter":
        base = random_background(rng, size, vocab, kind=("solid", "gradient", "noise")[int(rng.integers(3))])
        img = Image.fromarray(base.astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(6, 18))):
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            ln = rng.uniform(0.1, 0.5) * min(h, w)
            a = rng.uniform(0, 2 * math.pi)
            col = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.line(
                [(x0, y0), (x0 + ln * math.cos(a), y0 + ln * math.sin(a))], fill=col, width=int(rng.integers(1, 3))
            )
        for _ in range(int(rng.integers(5, 20))):
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(0.5, 2.0)
            col = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=col)
        return np.asarray(img, np.float32).copy()
    raise ValueError(f"unknown background {kind!r}; choose one of {BACKGROUNDS}")


# ----------------------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """A background and objects in z-order (first drawn first). Labels are 1..len(objects) in that order."""

    background: np.ndarray  # (H, W, 3) float32 in [0, 255]
    objects: tuple[SceneObject, ...]
    noise: float = 0.0  # std of the pixel noise added when rendering

    @property
    def size(self) -> Size:
        return self.background.shape[:2]


def render(scene: Scene, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw a scene: image (H, W, 3) uint8 and instance labels (H, W) uint8 (object i is label i + 1, visible
    pixels only; 0 = background). Pixel noise needs ``rng``; without one it is left out."""
    image = scene.background.copy()
    labels = np.zeros(scene.size, np.uint8)
    for i, obj in enumerate(scene.objects):
        paint_object(image, labels, obj, i + 1)
    if rng is not None and scene.noise > 0:
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(scene.noise)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), labels


def _place(rng: np.random.Generator, obj: SceneObject, placed: list[SceneObject], size: Size) -> SceneObject:
    # Reject centres too close to an earlier object, so objects overlap partly but rarely hide each other.
    h, w = size
    best = obj
    for _ in range(12):
        cand = replace(obj, cx=rng.uniform(0.08 * w, 0.92 * w), cy=rng.uniform(0.08 * h, 0.92 * h))
        if all(math.hypot(cand.cx - o.cx, cand.cy - o.cy) > 0.75 * (cand.radius + o.radius) for o in placed):
            return cand
        best = cand
    return best


def _noise_level(rng: np.random.Generator) -> float:
    return float(rng.choice([0.0, 0.0, 2.0, 4.0, 8.0]))


def category_scene(
    rng: np.random.Generator,
    size: Size,
    vocab: Vocabulary,
    attribute: str,
    values: list[str],
    num_positive: tuple[int, int] = (1, 3),
    num_distractors: tuple[int, int] = (1, 4),
    p_share: float = 0.5,
) -> tuple[Scene, list[int]]:
    """A scene with objects of the category values ``values`` (of ``attribute``) and distractors.

    Returns the scene and, per object, its class: j + 1 when it has ``values[j]``, 0 for a distractor.
    Distractors never have any of ``values`` but, with probability ``p_share``, copy the other attributes of a
    positive object, which is what makes one example ambiguous.
    """
    objs: list[SceneObject] = []
    classes: list[int] = []
    others = [a for a in ATTRIBUTES if a != attribute]
    for j, value in enumerate(values):
        for _ in range(int(rng.integers(num_positive[0], num_positive[1] + 1))):
            objs.append(random_object(rng, size, vocab, fixed={attribute: value}))
            classes.append(j + 1)
    positives = list(objs)
    has_other = any(v not in values for v in vocab.values(attribute)) or (attribute == "shape" and vocab.p_random_shape)
    num = int(rng.integers(num_distractors[0], num_distractors[1] + 1)) if has_other else 0
    for _ in range(num):
        fixed = {attribute: vocab.draw(rng, attribute, exclude=tuple(values))}
        if rng.random() < p_share:
            src = positives[int(rng.integers(len(positives)))]
            share = others if rng.random() < 0.4 else [others[int(rng.integers(len(others)))]]
            fixed.update({a: src.attribute(a) for a in share})
        objs.append(random_object(rng, size, vocab, fixed=fixed))
        classes.append(0)
    order = rng.permutation(len(objs))  # z-order: positives and distractors interleaved
    placed: list[SceneObject] = []
    for i in order:
        placed.append(_place(rng, objs[i], placed, size))
    scene = Scene(random_background(rng, size, vocab), tuple(placed), _noise_level(rng))
    return scene, [classes[i] for i in order]


def class_map(instances: np.ndarray, classes: list[int]) -> np.ndarray:
    """Instance labels (object i -> i + 1) to class labels, through ``classes[i]``."""
    lut = np.zeros(max(256, len(classes) + 1), np.uint8)
    lut[1 : len(classes) + 1] = classes
    return lut[instances]


def _check_size(size: int | Size) -> Size:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"size must be an int or (H, W) with both sides >= 16, got {size}")
    return int(size[0]), int(size[1])


@dataclass(frozen=True)
class SemanticEpisode:
    """k examples and a query of one category: images (H, W, 3) uint8, masks (H, W) uint8 in {0, 1}."""

    images: list[np.ndarray]  # k examples
    masks: list[np.ndarray]
    query_image: np.ndarray
    query_mask: np.ndarray
    attribute: str  # "shape" | "texture" | "colour"
    value: str  # e.g. "star5"


# Shapes are the richest family; textures and colours are there so the model learns to read *which* attribute
# the examples agree on.
DEFAULT_KIND_WEIGHTS: dict[str, float] = {"shape": 0.5, "texture": 0.25, "colour": 0.25}


def check_kind_weights(kind_weights: dict[str, float] | None) -> dict[str, float] | None:
    """Validate attribute-kind weights for drawing categories (None: :data:`DEFAULT_KIND_WEIGHTS`)."""
    if kind_weights is None:
        return None
    unknown = sorted(set(kind_weights) - set(ATTRIBUTES))
    values = [float(w) for w in kind_weights.values()]
    if unknown or not kind_weights or min(values) < 0 or sum(values) <= 0:
        raise ValueError(
            f"category kind weights must map some of {ATTRIBUTES} to weights >= 0 with a positive sum, "
            f"got {kind_weights}"
        )
    return {k: float(w) for k, w in kind_weights.items()}


def _category_kind(
    rng: np.random.Generator, vocab: Vocabulary, attribute: str | None, kind_weights: dict[str, float] | None = None
) -> str:
    kinds = [a for a in ATTRIBUTES if a in vocab.category_values]
    if attribute is not None:
        if attribute not in kinds:
            raise ValueError(f"attribute {attribute!r} is not a category of this split; choose one of {kinds}")
        return attribute
    table = DEFAULT_KIND_WEIGHTS if kind_weights is None else kind_weights
    weights = np.array([float(table.get(k, 0.0)) for k in kinds])
    if weights.sum() <= 0:
        raise ValueError(f"category kind weights {table} give no weight to any kind of this split ({kinds})")
    return kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]


def _draw_categories(rng: np.random.Generator, vocab: Vocabulary, attribute: str, n: int) -> list[str]:
    values: list[str] = []
    while len(values) < n:
        values.append(vocab.draw(rng, attribute, exclude=tuple(values), category=True))
    return values


def _min_pixels(size: Size) -> int:
    return max(8, size[0] * size[1] // 400)


def sample_semantic(
    rng: np.random.Generator,
    size: int | Size = 128,
    k_shots: int = 1,
    split: str = "train",
    attribute: str | None = None,
    value: str | None = None,
    p_share: float = 0.5,
    kind_weights: dict[str, float] | None = None,
) -> SemanticEpisode:
    """A binary few-shot episode: ``k_shots`` examples and one query, all with the category's mask.

    Args:
        size: (H, W) or one side of square images.
        k_shots: examples (>= 1).
        split: ``"train"`` (training vocabulary) or ``"eval"`` (held-out categories).
        attribute, value: force the category (otherwise drawn).
        p_share: probability that a distractor copies non-category attributes of a positive object.
        kind_weights: how often each attribute kind is the category when ``attribute`` is None
            (default :data:`DEFAULT_KIND_WEIGHTS`).
    """
    size = _check_size(size)
    if k_shots < 1:
        raise ValueError(f"k_shots must be >= 1, got {k_shots}")
    vocab = vocabulary(split)
    attribute = _category_kind(rng, vocab, attribute, kind_weights)
    if value is None:
        value = vocab.draw(rng, attribute, category=True)
    elif not vocab.is_value(attribute, value, category=True):
        pool = vocab.category_values[attribute]
        raise ValueError(f"{attribute} {value!r} is not a category of split {split!r}; choose one of {pool}")
    images, masks = [], []
    for _ in range(k_shots + 1):
        image, mask = sample_category_image(rng, size, attribute, value, split, p_share)
        images.append(image)
        masks.append(mask)
    return SemanticEpisode(images[:-1], masks[:-1], images[-1], masks[-1], attribute, value)


def sample_category_image(
    rng: np.random.Generator,
    size: int | Size,
    attribute: str,
    value: str,
    split: str = "train",
    p_share: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """One scene holding the category ``attribute = value`` and distractors: image (H, W, 3) uint8 and the
    category's visible pixels (H, W) uint8 in {0, 1} (never empty: a scene that hides it is drawn again)."""
    image, mask, _, _, _ = category_image_scene(rng, size, attribute, value, split, p_share)
    return image, mask


def category_image_scene(
    rng: np.random.Generator,
    size: int | Size,
    attribute: str,
    value: str,
    split: str = "train",
    p_share: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, Scene, list[int], np.ndarray]:
    """:func:`sample_category_image` (the same draws from ``rng``) with what made it: image, mask, the scene,
    each object's class (1 = the category, 0 = distractor) and the instance labels (object i is i + 1)."""
    size = _check_size(size)
    vocab = vocabulary(split)
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; choose one of {ATTRIBUTES}")
    if not vocab.is_value(attribute, value):
        raise ValueError(
            f"{attribute} {value!r} is not drawn in split {split!r}; choose one of {vocab.values(attribute)}"
        )
    for _attempt in range(8):
        scene, classes = category_scene(rng, size, vocab, attribute, [value], p_share=p_share)
        image, inst = render(scene, rng)
        mask = class_map(inst, classes)
        if int(mask.sum()) >= _min_pixels(size):
            break  # otherwise the category is hidden (occluded / off-canvas): draw the scene again
    return image, mask, scene, classes, inst


def _pair(ia: np.ndarray, la: np.ndarray, ib: np.ndarray, lb: np.ndarray, seg_type: int, meta: dict) -> Pair:
    # Ids are per pair (category j of *this* pair, or object i of *this* scene), never dataset-wide, so
    # mix-context stitching must give a second pair's ids their own colours: ids_global=False.
    # An id the example does not show (cropped out, off-frame) cannot be named in the query: background there.
    lb = np.where(np.isin(lb, np.unique(la)), lb, 0)
    meta = {"source": "synth", **meta}
    return Pair(ia, la.astype(np.int32), ib, lb.astype(np.int32), seg_type, False, meta)


def sample_multiclass(
    rng: np.random.Generator,
    size: int | Size = 128,
    num_classes: int | None = None,
    split: str = "train",
    attribute: str | None = None,
    p_share: float = 0.5,
    kind_weights: dict[str, float] | None = None,
) -> Pair:
    """Two images with two or three categories of one attribute kind; label j + 1 = the j-th category."""
    size = _check_size(size)
    vocab = vocabulary(split)
    attribute = _category_kind(rng, vocab, attribute, kind_weights)
    pool = vocab.category_values[attribute]
    # The eval split has only two held-out textures: at most one class then, the other is the distractor.
    n = num_classes if num_classes is not None else min(int(rng.integers(2, 4)), len(pool) - 1)
    if not 1 <= n <= len(pool) - 1:
        raise ValueError(f"num_classes must be in [1, {len(pool) - 1}] for {attribute} in split {split!r}")
    values = _draw_categories(rng, vocab, attribute, n)
    out = []
    for _ in range(2):
        for _attempt in range(8):
            scene, classes = category_scene(
                rng, size, vocab, attribute, values, num_positive=(1, 2), num_distractors=(0, 3), p_share=p_share
            )
            image, inst = render(scene, rng)
            labels = class_map(inst, classes)
            if len(np.unique(labels)) == n + 1:
                break
        out.append((image, labels))
    (ia, la), (ib, lb) = out
    return _pair(ia, la, ib, lb, SEMANTIC, {"mode": "other", "attribute": attribute, "values": values})


# ----------------------------------------------------------------------------------------------------------
# Views: crop, scale, flip, colour jitter, small object motion
# ----------------------------------------------------------------------------------------------------------


def _jitter_object(rng: np.random.Generator, obj: SceneObject, amount: float) -> SceneObject:
    r = obj.radius
    return replace(
        obj,
        cx=obj.cx + rng.normal(0, amount * r),
        cy=obj.cy + rng.normal(0, amount * r),
        angle=obj.angle + rng.normal(0, amount * 0.6),
        radius=r * float(np.exp(rng.normal(0, amount * 0.3))),
    )


def _view(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, out: Size) -> tuple[np.ndarray, np.ndarray]:
    """Random resized crop (area 0.45..1, aspect 3/4..4/3), horizontal flip, colour jitter."""
    h, w = labels.shape
    area = rng.uniform(0.45, 1.0) * h * w
    ar = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw = int(round(min(w, math.sqrt(area * ar))))
    ch = int(round(min(h, math.sqrt(area / ar))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    box = (x0, y0, x0 + cw, y0 + ch)
    oh, ow = out
    img = np.asarray(Image.fromarray(image).resize((ow, oh), Image.BILINEAR, box=box), np.float32)
    lab = np.asarray(Image.fromarray(labels).resize((ow, oh), Image.NEAREST, box=box))
    if rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    # Colour jitter: brightness, contrast, per-channel gain (a mild hue / white-balance shift).
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.75, 1.25) + mean * rng.uniform(0.75, 1.25)
    img = img * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), np.ascontiguousarray(lab)


def two_views(
    rng: np.random.Generator, scene: Scene, out: Size, motion: float = 0.15
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Two renders of a scene with every object moved a little (``motion`` in radii), each through a random
    crop/flip/colour-jitter view. Labels stay the instance ids of the scene."""
    views = []
    for _ in range(2):
        moved = replace(scene, objects=tuple(_jitter_object(rng, o, motion) for o in scene.objects))
        image, inst = render(moved, rng)
        views.append(_view(rng, image, inst, out))
    return views[0], views[1]


def _scene_size(size: Size) -> Size:
    # Scenes for views are drawn 1.25x larger so a crop still has detail.
    return int(round(size[0] * 1.25)), int(round(size[1] * 1.25))


def sample_instance(
    rng: np.random.Generator,
    size: int | Size = 128,
    num_objects: tuple[int, int] = (2, 7),
    split: str = "train",
    motion: float = 0.15,
) -> Pair:
    """Two transformed views of one scene; label i names the same object in both views (0 = background).

    An object may be cropped out of one view; its id is then absent there.
    """
    size = _check_size(size)
    vocab = vocabulary(split)
    ssize = _scene_size(size)
    for _attempt in range(8):
        n = int(rng.integers(num_objects[0], num_objects[1] + 1))
        placed: list[SceneObject] = []
        for _ in range(n):
            placed.append(_place(rng, random_object(rng, ssize, vocab), placed, ssize))
        scene = Scene(random_background(rng, ssize, vocab), tuple(placed), _noise_level(rng))
        (ia, la), (ib, lb) = two_views(rng, scene, size, motion)
        if la.any() and lb.any():
            break
    return _pair(ia, la, ib, lb, INSTANCE, {"mode": "views", "num_objects": n})


def _scene_of(
    rng: np.random.Generator, size: Size, vocab: Vocabulary, specs: list[tuple[dict, dict, int]]
) -> tuple[Scene, list[int]]:
    # specs: (fixed, exclude, class) per object, drawn in a random z-order as in category_scene.
    placed: list[SceneObject] = []
    classes: list[int] = []
    for i in rng.permutation(len(specs)):
        fixed, exclude, cls = specs[i]
        placed.append(_place(rng, random_object(rng, size, vocab, fixed=fixed, exclude=exclude), placed, size))
        classes.append(cls)
    return Scene(random_background(rng, size, vocab), tuple(placed), _noise_level(rng)), classes


def contrast_scenes(
    rng: np.random.Generator, size: Size, vocab: Vocabulary, attribute: str, value: str
) -> tuple[tuple[Scene, list[int]], tuple[Scene, list[int]], str]:
    """An example scene and a query scene in which only the category's own attribute predicts the query's mask.

    A *confound* (another attribute kind, one value of it) is shared by the example's category object and by
    its unmarked *foils*, so the example says which attribute is not the category. In the query, *lookalikes*
    have the confound too: copies of the example's category object with another value of ``attribute``; each
    of the query's category objects has it or not at even odds. Matching the example's look (its colour, its
    texture) marks the lookalikes, avoiding it misses half the category; only reading ``attribute`` marks the
    right objects. Returns both scenes with each object's class (1 = the category) and the confound's kind.
    """
    others = [a for a in ATTRIBUTES if a != attribute]
    confound = others[int(rng.integers(len(others)))]
    third = next(a for a in others if a != confound)
    u = vocab.draw(rng, confound)
    w = vocab.draw(rng, third)

    def other_value() -> str:
        return vocab.draw(rng, attribute, exclude=(value,))

    example = [({attribute: value, confound: u, third: w}, {}, 1)]
    example += [({attribute: other_value(), confound: u}, {}, 0) for _ in range(int(rng.integers(1, 3)))]
    example += [({attribute: other_value()}, {}, 0) for _ in range(int(rng.integers(0, 2)))]
    # Half the query's category objects share the confound too, so the look predicts nothing either way: a
    # model that learnt "avoid what looks like the example" would be as wrong as one that copies it.
    query = [
        ({attribute: value, confound: u}, {}, 1) if rng.random() < 0.5 else ({attribute: value}, {confound: u}, 1)
        for _ in range(int(rng.integers(1, 3)))
    ]
    query += [
        ({attribute: other_value(), confound: u, **({third: w} if rng.random() < 0.5 else {})}, {}, 0)
        for _ in range(int(rng.integers(1, 3)))
    ]
    query += [({attribute: other_value()}, {}, 0) for _ in range(int(rng.integers(0, 2)))]
    return _scene_of(rng, size, vocab, example), _scene_of(rng, size, vocab, query), confound


def render_contrast(
    rng: np.random.Generator, size: Size, vocab: Vocabulary, attribute: str, value: str, min_pixels: int = 1
) -> tuple:
    """:func:`contrast_scenes` rendered, drawn again (up to 8 times) until both scenes show at least
    ``min_pixels`` of the category: the example's image, instance labels, scene and classes, the query's, and the
    confound's kind."""
    for _attempt in range(8):
        (sa, ca), (sb, cb), confound = contrast_scenes(rng, size, vocab, attribute, value)
        ia, la = render(sa, rng)
        ib, lb = render(sb, rng)
        if int(class_map(la, ca).sum()) >= min_pixels and int(class_map(lb, cb).sum()) >= min_pixels:
            break
    return (ia, la, sa, ca), (ib, lb, sb, cb), confound


def sample_contrast_pair(
    rng: np.random.Generator,
    size: int | Size = 128,
    split: str = "train",
    attribute: str | None = None,
    kind_weights: dict[str, float] | None = None,
) -> Pair:
    """A one-category pair from :func:`contrast_scenes`: the example's look is shared by its unmarked foils, by
    lookalikes in the query and by half the query's category objects, so neither copying it nor avoiding it
    finds the category; reading the category's attribute does."""
    size = _check_size(size)
    vocab = vocabulary(split)
    attribute = _category_kind(rng, vocab, attribute, kind_weights)
    value = vocab.draw(rng, attribute, category=True)
    (ia, la, _, ca), (ib, lb, _, cb), confound = render_contrast(rng, size, vocab, attribute, value, _min_pixels(size))
    meta = {"mode": "contrast", "attribute": attribute, "values": [value], "confound": confound}
    return _pair(ia, class_map(la, ca), ib, class_map(lb, cb), SEMANTIC, meta)


def sample_semantic_pair(
    rng: np.random.Generator,
    size: int | Size = 128,
    split: str = "train",
    p_same_scene: float = 0.5,
    p_multiclass: float = 0.3,
    p_share: float = 0.5,
    kind_weights: dict[str, float] | None = None,
    p_contrast: float = 0.0,
) -> Pair:
    """A semantic training pair as the paper draws them: with probability ``p_same_scene`` the example is a
    transformed view of the query's own scene, otherwise another scene with the same categories. With
    probability ``p_multiclass`` two or three categories are labelled (labels 1..n), otherwise one.
    ``p_share``: the chance a distractor copies other attributes of a category object (:func:`category_scene`).
    ``kind_weights``: how often shapes, textures and colours are the category (:data:`DEFAULT_KIND_WEIGHTS`).
    ``p_contrast``: the chance of a :func:`sample_contrast_pair` instead (0 leaves the stream as it was)."""
    size = _check_size(size)
    if p_contrast > 0 and rng.random() < p_contrast:
        return sample_contrast_pair(rng, size, split, kind_weights=kind_weights)
    vocab = vocabulary(split)
    if rng.random() < p_same_scene:
        attribute = _category_kind(rng, vocab, None, kind_weights)
        pool = vocab.category_values[attribute]
        n = min(int(rng.integers(2, 4)), len(pool) - 1) if rng.random() < p_multiclass else 1
        values = _draw_categories(rng, vocab, attribute, n)
        ssize = _scene_size(size)
        for _attempt in range(8):
            scene, classes = category_scene(rng, ssize, vocab, attribute, values, num_positive=(1, 2), p_share=p_share)
            (ia, la), (ib, lb) = two_views(rng, scene, size, motion=0.1)
            la, lb = class_map(la, classes), class_map(lb, classes)
            if la.any() and lb.any():
                break
        return _pair(ia, la, ib, lb, SEMANTIC, {"mode": "same", "attribute": attribute, "values": values})
    if rng.random() < p_multiclass:
        return sample_multiclass(rng, size, split=split, p_share=p_share, kind_weights=kind_weights)
    ep = sample_semantic(rng, size, 1, split=split, p_share=p_share, kind_weights=kind_weights)
    meta = {"mode": "other", "attribute": ep.attribute, "values": [ep.value]}
    return _pair(ep.images[0], ep.masks[0], ep.query_image, ep.query_mask, SEMANTIC, meta)


# ----------------------------------------------------------------------------------------------------------
# Video
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Video:
    """Frames (T, H, W, 3) uint8 and label maps (T, H, W) uint8: object i + 1 in every frame it is visible."""

    frames: np.ndarray
    labels: np.ndarray
    objects: tuple[SceneObject, ...]  # attributes of each object (pose of frame 0)


def sample_video(
    rng: np.random.Generator,
    size: int | Size = 128,
    num_frames: int = 8,
    num_objects: int = 3,
    split: str = "train",
) -> Video:
    """Objects that move, turn, change scale, occlude one another, leave the frame and come back.

    Object 1 always leaves the frame in the middle frames and comes back (every video with num_frames >= 3 has a
    reappearance);
    the others move linearly and bounce off the walls of a domain a little larger than the frame. Z-order is
    fixed per object, so crossing paths occlude.
    """
    size = _check_size(size)
    if num_frames < 1 or num_objects < 1:
        raise ValueError(f"need num_frames >= 1 and num_objects >= 1, got {num_frames}, {num_objects}")
    if num_objects > 255:
        raise ValueError("at most 255 objects (labels are uint8)")
    vocab = vocabulary(split)
    h, w = size
    background = random_background(rng, size, vocab, kind=("solid", "gradient", "noise", "texture")[rng.integers(4)])
    objs = [random_object(rng, size, vocab, radius_range=(0.1, 0.2)) for _ in range(num_objects)]
    noise = _noise_level(rng)
    t = np.arange(num_frames, dtype=np.float64)
    tracks = []
    for i, o in enumerate(objs):
        spin = rng.uniform(-0.25, 0.25)
        growth = rng.uniform(-0.03, 0.03)
        if i == 0:
            # Out and back: along one axis towards the nearer border, fully outside while sin(pi t / (T-1)) > 0.8
            # (the middle frames), back where it started on the last frame.
            axis = int(rng.integers(2))
            span = (w, h)[axis]
            start = span * rng.uniform(0.2, 0.8)
            towards = 1.0 if start > span / 2 else -1.0
            amp = ((span - start if towards > 0 else start) + 1.5 * o.radius) / 0.8
            main = start + towards * amp * np.sin(math.pi * t / max(num_frames - 1, 1))
            other = (h, w)[axis] * rng.uniform(0.25, 0.75) + rng.uniform(-1, 1) * t
            xs, ys = (main, other) if axis == 0 else (other, main)
        else:
            speed = rng.uniform(0.02, 0.08) * min(h, w)
            a = rng.uniform(0, 2 * math.pi)
            xs = _bounce(o.cx + speed * math.cos(a) * t, -0.1 * w, 1.1 * w)
            ys = _bounce(o.cy + speed * math.sin(a) * t, -0.1 * h, 1.1 * h)
        tracks.append((xs, ys, o.angle + spin * t, o.radius * np.exp(growth * t)))
    order = rng.permutation(num_objects)  # z-order
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    labels = np.zeros((num_frames, h, w), np.uint8)
    for f in range(num_frames):
        image = background.copy()
        for i in order:
            xs, ys, ang, rad = tracks[i]
            o = replace(objs[i], cx=float(xs[f]), cy=float(ys[f]), angle=float(ang[f]), radius=float(rad[f]))
            paint_object(image, labels[f], o, int(i) + 1)
        if noise > 0:
            image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise)
        frames[f] = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return Video(frames, labels, tuple(objs))


def _bounce(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    # Reflect a linear path off the walls lo and hi (a triangle wave).
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def sample_video_pair(rng: np.random.Generator, size: int | Size = 128, split: str = "train") -> Pair:
    """Two frames of a short video as an instance pair: the example is an earlier frame showing some object."""
    for _attempt in range(8):
        num_frames = int(rng.integers(3, 9))
        video = sample_video(rng, size, num_frames, int(rng.integers(1, 5)), split=split)
        shown = [t for t in range(num_frames - 1) if video.labels[t].any()]
        if shown:
            break
    i = shown[int(rng.integers(len(shown)))] if shown else 0
    j = int(rng.integers(i + 1, num_frames))
    f, lab = video.frames, video.labels
    return _pair(f[i], lab[i], f[j], lab[j], INSTANCE, {"mode": "video", "frames": [i, j]})


# ----------------------------------------------------------------------------------------------------------
# The training source
# ----------------------------------------------------------------------------------------------------------

TASKS: tuple[str, ...] = ("semantic", "instance", "video")
DEFAULT_TASK_WEIGHTS: dict[str, float] = {"semantic": 0.55, "instance": 0.3, "video": 0.15}


class SynthContextSource:
    """SynthContext as a training :class:`~seggpt.data.base.Source`: a mixture of its own pair kinds.

    ``semantic``: one category (or two or three, labels 1..n) in two scenes, or in two views of one scene;
    ``instance``: two views of one scene with object ids; ``video``: two frames of a short video. The world
    is infinite, so ``len`` is nominal. Every pair depends only on the generator passed in.

    Args:
        tasks: task -> weight, or one task name. Weights need not sum to 1.
        split: ``"train"`` (never draws held-out shapes or textures) or ``"eval"``.
        p_same_scene: for semantic pairs, the chance the example is a view of the query's own scene (paper: 0.5).
        p_multiclass: for semantic pairs, the chance of two or three labelled categories.
        p_share: for semantic pairs, the chance that a distractor copies other attributes of a category object,
            so that only the category's own attribute tells them apart.
        kind_weights: for semantic pairs, how often the category is a shape, a texture or a colour, e.g.
            ``{shape: 1.0}`` for shapes only (default :data:`DEFAULT_KIND_WEIGHTS`).
        p_contrast: for semantic pairs, the chance of a contrast pair (:func:`sample_contrast_pair`), where
            the example's look is no guide: its unmarked foils and lookalikes in the query share it.
    """

    def __init__(
        self,
        tasks: dict[str, float] | str | None = None,
        split: str = "train",
        p_same_scene: float = 0.5,
        p_multiclass: float = 0.3,
        p_share: float = 0.5,
        kind_weights: dict[str, float] | None = None,
        p_contrast: float = 0.0,
        name: str = "synth",
    ) -> None:
        if tasks is None:
            tasks = dict(DEFAULT_TASK_WEIGHTS)
        elif isinstance(tasks, str):
            tasks = {tasks: 1.0}
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown or not tasks:
            raise ValueError(f"unknown synth tasks {unknown}; choose weights for some of {TASKS}")
        weights = np.array([float(tasks[t]) for t in tasks])
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"synth task weights must be >= 0 with a positive sum, got {tasks}")
        vocab = vocabulary(split)  # validates the split
        self.name = name
        self.split = split
        self.tasks = list(tasks)
        self.weights = weights / weights.sum()
        self.p_same_scene = p_same_scene
        self.p_multiclass = p_multiclass
        if not 0.0 <= p_share <= 1.0:
            raise ValueError(f"p_share must be in [0, 1], got {p_share}")
        self.p_share = p_share
        if not 0.0 <= p_contrast <= 1.0:
            raise ValueError(f"p_contrast must be in [0, 1], got {p_contrast}")
        self.p_contrast = p_contrast
        self.kind_weights = check_kind_weights(kind_weights)
        if self.kind_weights is not None and not any(self.kind_weights.get(k, 0) > 0 for k in vocab.category_values):
            raise ValueError(
                f"category kind weights {kind_weights} give no weight to any kind of split {split!r} "
                f"({sorted(vocab.category_values)})"
            )

    def __len__(self) -> int:
        return 1_000_000  # nominal: every draw is a new scene

    def __repr__(self) -> str:
        mix = ", ".join(f"{t}={w:.2f}" for t, w in zip(self.tasks, self.weights, strict=True))
        return f"SynthContextSource({mix}, split={self.split!r})"

    def sample_pair(self, rng: np.random.Generator, size: tuple[int, int]) -> Pair:
        task = self.tasks[int(rng.choice(len(self.tasks), p=self.weights))]
        if task == "semantic":
            pair = sample_semantic_pair(
                rng,
                size,
                self.split,
                self.p_same_scene,
                self.p_multiclass,
                self.p_share,
                self.kind_weights,
                self.p_contrast,
            )
        elif task == "instance":
            pair = sample_instance(rng, size, split=self.split)
        else:
            pair = sample_video_pair(rng, size, split=self.split)
        pair.meta["source"] = self.name
        return pair


def build_source(**options) -> SynthContextSource:
    """Factory for YAML configs: ``{type: synth, weight: w, tasks: {semantic: 0.55, instance: 0.3, video: 0.15}}``."""
    return SynthContextSource(**options)


# ----------------------------------------------------------------------------------------------------------
# Speed check: python -m seggpt.data.synth
# ----------------------------------------------------------------------------------------------------------


def _benchmark(n: int = 200, size: int = 128) -> dict[str, tuple[float, float]]:
    """Milliseconds per draw: (wall, CPU) for each sampler. On a shared machine the CPU time is the honest
    figure (the wall time also counts waiting for the core)."""
    rng = np.random.default_rng(0)
    jobs = {
        "semantic pair (1 shot)": lambda: sample_semantic(rng, size, 1),
        "semantic training pair": lambda: sample_semantic_pair(rng, size),
        "multiclass pair": lambda: sample_multiclass(rng, size),
        "instance pair": lambda: sample_instance(rng, size),
        "video pair": lambda: sample_video_pair(rng, size),
        "SynthContextSource pair": lambda: SynthContextSource().sample_pair(rng, (size, size)),
    }
    out = {}
    for name, job in jobs.items():
        job()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            job()
        out[name] = ((time.perf_counter() - t0) / n * 1000, (time.process_time() - c0) / n * 1000)
    return out


if __name__ == "__main__":
    print(f"{'128x128, ms per draw':28s} {'wall':>7s} {'CPU':>7s}")
    for k, (wall, cpu) in _benchmark().items():
        print(f"{k:28s} {wall:7.2f} {cpu:7.2f}")
