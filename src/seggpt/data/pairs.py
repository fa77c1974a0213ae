"""In-context pairs: from a dataset's images and label maps to the canvases the model trains on.

Pair sampling follows the supplementary:

* semantic data: with probability ``p_same`` (0.5) the example is a transformed view of the query image
  itself; otherwise it is another image that contains a class of the query ("another image with the class");
* instance data: always two transformed views of the same image.

Then, for every pair, colours are drawn at random (one mapping for both halves) — the model must read the
mapping from the example. Optionally two pairs of the same source are stitched side by side (mix-context
training), and patches are masked (:mod:`seggpt.data.masking`).

Choice (ours; the paper does not say): when the example is another image, query classes that the example does
not show are painted background in the query. The example is the only definition of the task, so a class it
does not show cannot be asked for.

Absent pairs (ours, ``p_absent``): the example shows one class and the query is an image without it, so the
answer is all background. Pairs drawn as above always share a class, so a model trained on them alone learns to
paint something in every query; one-shot benchmarks (and users) also ask for classes a target does not show.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seggpt.coloring import colouring_for_ids, paint_with
from seggpt.data.augment import AugmentConfig, present_ids, random_view, resize_pair
from seggpt.data.base import IGNORE, INSTANCE, SEMANTIC, DataError, Pair
from seggpt.data.masking import MaskingConfig, sample_mask
from seggpt.data.readers.base import LabelDataset
from seggpt.transforms import normalize, stack_canvas

log = logging.getLogger(__name__)


# Sources over a LabelDataset ------------------------------------------------------------------------------
class SemanticPairs:
    """A :class:`~seggpt.data.base.Source` of category pairs from a semantic :class:`LabelDataset`.

    Args:
        dataset: the reader.
        p_same: probability that the example is a transformed view of the query image itself.
        augment: the view transform.
        index_cache: optional JSON file caching the class -> items index (built by reading every label map
            when the reader has no metadata; worth caching for ADE20K-sized sets).
        p_single: probability that the pair is reduced to one class of the example (the others painted
            background in both halves): the binary "segment this category" task of one-shot benchmarks, where a
            scene set like CamVid would otherwise always ask for every class at once.
        p_absent: probability of an absent pair: one class of an example image, asked of a query image that does
            not show it (the answer is all background). Drawn first, and only when above 0, so the pairs of
            configs without it are unchanged.
    """

    def __init__(
        self,
        dataset: LabelDataset,
        p_same: float = 0.5,
        augment: AugmentConfig | None = None,
        index_cache: str | os.PathLike | None = None,
        p_single: float = 0.0,
        p_absent: float = 0.0,
    ) -> None:
        if not 0.0 <= p_same <= 1.0:
            raise ValueError(f"p_same must be in [0, 1], got {p_same}")
        if not 0.0 <= p_single <= 1.0:
            raise ValueError(f"p_single must be in [0, 1], got {p_single}")
        if not 0.0 <= p_absent <= 1.0:
            raise ValueError(f"p_absent must be in [0, 1], got {p_absent}")
        self.p_single = p_single
        self.p_absent = p_absent
        if len(dataset) == 0:
            raise ValueError(f"dataset {dataset.name} has no items")
        self.dataset = dataset
        self.name = dataset.name
        self.p_same = p_same
        self.augment = augment or AugmentConfig()
        self.item_classes, self.class_items = self._build_index(index_cache)
        # Classes an absent pair can ask for: shown by some image and missing from another.
        self.absent_classes = sorted(c for c, items in self.class_items.items() if len(items) < len(dataset))

    def __len__(self) -> int:
        return len(self.dataset)

    def _build_index(self, cache: str | os.PathLike | None) -> tuple[list[list[int]], dict[int, list[int]]]:
        ds = self.dataset
        if cache is not None and Path(cache).is_file():
            data = json.loads(Path(cache).read_text())
            if data.get("name") == ds.name and len(data["items"]) == len(ds):
                items = [list(c) for c in data["items"]]
                return items, _invert(items)
            log.warning("ignoring class index cache %s: it belongs to another dataset or size", cache)
        items: list[list[int]] = []
        unknown = 0
        for i in range(len(ds)):
            known = ds.classes(i)
            if known is None:
                unknown += 1
                try:
                    known = present_ids(ds.load(i)[1])
                except DataError as e:
                    log.warning("class index: skipping %s", e)
                    known = set()
            items.append(sorted(known))
        if unknown:
            log.info("%s: scanned %d label maps for the class index", ds.name, unknown)
        if cache is not None:
            tmp = Path(cache).with_name(f".{Path(cache).name}.tmp{os.getpid()}")
            tmp.write_text(json.dumps({"name": ds.name, "items": items}))
            os.replace(tmp, cache)  # ranks building the same cache never see a half-written file
        return items, _invert(items)

    def sample_pair(self, rng: np.random.Generator, size: tuple[int, int]) -> Pair:
        if self.p_absent > 0 and self.absent_classes and rng.random() < self.p_absent:
            pair = self._absent_pair(rng, size)
            if pair is not None:
                return pair
        ds = self.dataset
        q = int(rng.integers(len(ds)))
        q_img, q_lab = ds.load(q)
        q_classes = sorted(present_ids(q_lab))
        mode = "same"
        e = q
        if q_classes and rng.random() >= self.p_same:
            c = q_classes[int(rng.integers(len(q_classes)))]
            others = [j for j in self.class_items.get(c, []) if j != q]
            if others:
                e = others[int(rng.integers(len(others)))]
                mode = "other"
            else:
                mode = "same_fallback"  # the class occurs in no other image: a view of the same one
        if e == q:
            e_img, e_lab = q_img, q_lab
        else:
            e_img, e_lab = ds.load(e)
        ex_img, ex_lab = random_view(e_img, e_lab, size, rng, self.augment)
        qu_img, qu_lab = random_view(q_img, q_lab, size, rng, self.augment)
        if mode == "other":
            shown = present_ids(ex_lab)
            qu_lab = np.where(np.isin(qu_lab, list(shown)) | (qu_lab == IGNORE), qu_lab, 0).astype(np.int32)
        # Drawn only when p_single > 0, so the streams of configs without it are unchanged.
        if self.p_single > 0 and rng.random() < self.p_single and (shown := sorted(present_ids(ex_lab))):
            c = shown[int(rng.integers(len(shown)))]
            ex_lab, qu_lab = _only_class(ex_lab, c), _only_class(qu_lab, c)
            mode += "_single"
        return Pair(
            ex_img,
            ex_lab,
            qu_img,
            qu_lab,
            seg_type=SEMANTIC,
            ids_global=True,
            meta={"source": self.name, "mode": mode, "files": [ds.describe(e), ds.describe(q)]},
        )

    def _absent_pair(self, rng: np.random.Generator, size: tuple[int, int], tries: int = 4) -> Pair | None:
        """Class c of an example image, asked of a query image without c: the query's answer is all background.

        None when no view of the example kept c in ``tries`` draws (c is small there and the crops missed it).
        """
        ds = self.dataset
        c = self.absent_classes[int(rng.integers(len(self.absent_classes)))]
        showing = self.class_items[c]
        e = showing[int(rng.integers(len(showing)))]
        lacking = [i for i, cs in enumerate(self.item_classes) if c not in cs]
        q = lacking[int(rng.integers(len(lacking)))]
        e_img, e_lab = ds.load(e)
        for _ in range(tries):
            ex_img, ex_lab = random_view(e_img, e_lab, size, rng, self.augment)
            if (ex_lab == c).any():
                break
        else:
            return None
        qu_img, qu_lab = random_view(*ds.load(q), size, rng, self.augment)
        ex_lab, qu_lab = _only_class(ex_lab, c), _only_class(qu_lab, c)  # the query has no c: all background
        meta = {"source": self.name, "mode": "absent", "files": [ds.describe(e), ds.describe(q)]}
        return Pair(ex_img, ex_lab, qu_img, qu_lab, seg_type=SEMANTIC, ids_global=True, meta=meta)


class InstancePairs:
    """A :class:`~seggpt.data.base.Source` of instance pairs: always two transformed views of one image."""

    def __init__(self, dataset: LabelDataset, augment: AugmentConfig | None = None) -> None:
        if len(dataset) == 0:
            raise ValueError(f"dataset {dataset.name} has no items")
        self.dataset = dataset
        self.name = dataset.name
        self.augment = augment or AugmentConfig()

    def __len__(self) -> int:
        return len(self.dataset)

    def sample_pair(self, rng: np.random.Generator, size: tuple[int, int]) -> Pair:
        i = int(rng.integers(len(self.dataset)))
        img, lab = self.dataset.load(i)
        ex_img, ex_lab = random_view(img, lab, size, rng, self.augment)
        qu_img, qu_lab = random_view(img, lab, size, rng, self.augment)
        return Pair(
            ex_img,
            ex_lab,
            qu_img,
            qu_lab,
            seg_type=INSTANCE,
            ids_global=False,
            meta={"source": self.name, "mode": "views", "files": [self.dataset.describe(i)]},
        )


def _only_class(labels: np.ndarray, c: int) -> np.ndarray:
    """Label map with class ``c`` (and ignored pixels) kept and everything else background."""
    return np.where((labels == c) | (labels == IGNORE), labels, 0).astype(np.int32)


def _small_label_weights(labels: np.ndarray, area: float, cap: float) -> np.ndarray:
    """(H, W) float32: min(cap, area / fraction) on each foreground label's pixels (at least 1), 1 elsewhere.

    The fraction is of the label's valid pixels in the whole pair (example and query), so a label gets one weight.
    """
    out = np.ones(labels.shape, np.float32)
    valid = labels != IGNORE
    total = max(int(valid.sum()), 1)
    ids, counts = np.unique(labels[valid & (labels > 0)], return_counts=True)
    for i, n in zip(ids, counts, strict=True):
        w = min(cap, area * total / n)
        if w > 1.0:
            out[labels == i] = w
    return out


def _invert(items: list[list[int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for i, cs in enumerate(items):
        for c in cs:
            out[c].append(i)
    return dict(out)


def pair_source(dataset: LabelDataset, **options) -> SemanticPairs | InstancePairs:
    """The right Source for a reader: instance readers give view pairs, semantic readers category pairs."""
    aug = options.pop("augment", None)
    if isinstance(aug, dict):
        aug = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()})
    if dataset.seg_type == INSTANCE:
        if options:
            raise ValueError(f"unknown options {sorted(options)} for instance source {dataset.name}")
        return InstancePairs(dataset, augment=aug)
    return SemanticPairs(dataset, augment=aug, **options)


# Mix-context stitching ----------------------------------------------------------------------------------
def stitch(a: Pair, b: Pair, rng: np.random.Generator, size: tuple[int, int]) -> Pair:
    """Mix-context: two pairs side by side under one colour mapping, randomly cropped and resized to ``size``.

    Example halves are stitched together and query halves together, so one canvas carries two contexts.
    With per-image ids (``ids_global=False``) the second pair's ids are offset so both keep distinct colours.
    """
    b_ex, b_q = b.example_labels, b.query_labels
    if not (a.ids_global and b.ids_global):
        off = max(int(a.example_labels.max(initial=0)), int(a.query_labels.max(initial=0)))
        b_ex = np.where(b_ex > 0, b_ex + off, b_ex)
        b_q = np.where(b_q > 0, b_q + off, b_q)

    def side_by_side(img1, lab1, img2, lab2):
        img2, lab2 = resize_pair(img2, lab2, img1.shape[:2])
        img = np.concatenate([img1, img2], axis=1)
        lab = np.concatenate([lab1, lab2], axis=1)
        h, w2 = lab.shape
        w = int(rng.integers(w2 // 2, w2 + 1))  # keep between one and two images' width
        left = int(rng.integers(0, w2 - w + 1))
        return resize_pair(img, lab, size, (left, 0, left + w, h))

    ex_img, ex_lab = side_by_side(a.example_image, a.example_labels, b.example_image, b_ex)
    qu_img, qu_lab = side_by_side(a.query_image, a.query_labels, b.query_image, b_q)
    meta = dict(a.meta, mix=[a.meta.get("mode"), b.meta.get("mode")])
    return Pair(ex_img, ex_lab, qu_img, qu_lab, a.seg_type, a.ids_global and b.ids_global, meta)


# Pair -> training sample ---------------------------------------------------------------------------------
def colour_pair(pair: Pair, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random colouring shared by both halves: (example, query) colour masks (h, w, 3) uint8.

    Every id present in either half gets one fresh random colour; background and IGNORE stay black.
    """
    ids = sorted(present_ids(pair.example_labels) | present_ids(pair.query_labels))
    mapping = colouring_for_ids(ids, rng)
    return paint_with(pair.example_labels, mapping), paint_with(pair.query_labels, mapping)


def build_sample(
    pair: Pair,
    rng: np.random.Generator,
    image_size: tuple[int, int],
    patch_size: int,
    masking: MaskingConfig,
) -> dict[str, Tensor]:
    """One training sample, exactly what ``model(..., return_loss=True)`` eats (add a batch axis).

    Returns:
        images: (3, H, W) float32 canvas, example above query, normalised.
        masks: (3, H, W) float32 colour-mask canvas, normalised; the loss target.
        bool_masked_pos: (Hp * Wp,) bool.
        seg_type: () long.
        valid: (1, H, W) float32 loss weights: 0 on IGNORE pixels, ``masking.foreground_weight`` on labelled ones.
    """
    h, w = image_size
    ex_img, ex_lab = resize_pair(pair.example_image, pair.example_labels, (h, w))
    qu_img, qu_lab = resize_pair(pair.query_image, pair.query_labels, (h, w))
    pair = Pair(ex_img, ex_lab, qu_img, qu_lab, pair.seg_type, pair.ids_global, pair.meta)
    ex_col, qu_col = colour_pair(pair, rng)
    chw = lambda a: torch.tensor(a).permute(2, 0, 1)  # noqa: E731 -- (h, w, 3) -> (3, h, w), a writable copy
    images = normalize(stack_canvas(chw(ex_img), chw(qu_img)))
    masks = normalize(stack_canvas(chw(ex_col), chw(qu_col)))
    labels = np.concatenate([ex_lab, qu_lab], axis=0)
    valid = torch.from_numpy(labels != IGNORE)[None].float()
    if masking.foreground_weight != 1.0:
        valid[:, torch.from_numpy(labels > 0)] *= masking.foreground_weight
    if masking.small_cap > 1.0:
        valid[0] *= torch.from_numpy(_small_label_weights(labels, masking.small_area, masking.small_cap))
    grid = (2 * h // patch_size, w // patch_size)
    return {
        "images": images,
        "masks": masks,
        "bool_masked_pos": torch.from_numpy(sample_mask(grid, rng, masking)),
        "seg_type": torch.tensor(pair.seg_type, dtype=torch.long),
        "valid": valid,
    }
