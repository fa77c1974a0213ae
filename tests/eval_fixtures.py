"""Tiny datasets in each benchmark's published layout, and fake predictors with the predictor API.

The fake predictors read the answer from the image itself (red channel), so the expected scores of a fixture
follow from how it is drawn and are worked out by hand in the tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class FakePrediction:
    labels: np.ndarray


class FakePredictor:
    """``set_prompts`` records the call; the answer is ``red // step`` (binary tasks: red > 127)."""

    def __init__(self, step: int | None = None, model=None) -> None:
        self.step = step
        self.model = model  # only for learned prompts, whose loader checks the model's fingerprint
        self.calls: list[dict] = []
        self.num_labels = 1

    def set_prompts(self, images, masks, task="semantic", ensemble=None, num_labels=None):
        self.calls.append(
            {"images": [np.asarray(i) for i in images], "masks": [np.asarray(m) for m in masks], "ensemble": ensemble}
        )
        self.num_labels = num_labels or 1

    def set_prompt_tensors(self, images, masks, task="semantic", num_labels=None, ensemble=None):
        self.calls.append({"tensors": (images, masks), "num_labels": num_labels, "ensemble": ensemble})
        self.num_labels = num_labels or 1

    def _answer(self, image) -> FakePrediction:
        red = np.asarray(image)[..., 0].astype(np.int64)
        if self.step is None:
            return FakePrediction((red > 127).astype(np.int32))
        return FakePrediction(np.clip(red // self.step, 0, self.num_labels).astype(np.int32))

    def predict(self, target):
        return self._answer(target)

    def predict_batch(self, targets, batch_size=8, progress=False):
        return [self._answer(t) for t in targets]


class FakeVideoPredictor:
    """Every frame gets the first mask (objects that do not move)."""

    def __init__(self) -> None:
        self.calls = 0

    def propagate(self, frames, first_masks=None):
        self.calls += 1
        for t in range(len(frames)):
            yield t, np.asarray(first_masks).copy()


def rgb_from_red(red: np.ndarray) -> np.ndarray:
    red = np.asarray(red, np.uint8)
    return np.stack([red, np.full_like(red, 40), np.full_like(red, 90)], axis=2)


def save_png(path: Path, array: np.ndarray, palette: bool = False) -> None:
    """An 8-bit PNG holding exactly ``array``: grey ('L'), RGB, or a palette PNG whose indices are the values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.ascontiguousarray(np.asarray(array).astype(np.uint8))
    if palette:
        im = Image.frombytes("P", (a.shape[1], a.shape[0]), a.tobytes())
        im.putpalette([v for i in range(256) for v in ((i * 50) % 256, (i * 90) % 256, (i * 130) % 256)])
    else:
        im = Image.fromarray(a)
    im.save(path)


def save_jpg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=100, subsampling=0)


def square(shape: tuple[int, int], r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[r0:r1, c0:c1] = 1
    return m


# FSS-1000 ------------------------------------------------------------------------------------------------
def write_fss(root: Path, images_per_class: int = 3, split: bool = True) -> Path:
    """cat_a: the image shows its mask (perfect answers); cat_b: the image shows nothing (empty answers).
    Each image 16x16 with a 64-pixel square."""
    data = root / "fewshot_data"
    for name, visible in (("cat_a", True), ("cat_b", False)):
        for n in range(1, images_per_class + 1):
            m = square((16, 16), 4, 12, 4, 12)
            save_png(data / name / f"{n}.png", m * 255)
            save_jpg(data / name / f"{n}.jpg", rgb_from_red(m * 255 if visible else m * 0))
    (data / "unlisted").mkdir()
    if split:
        (root / "test.txt").write_text("cat_a\ncat_b\n")
    return root


# COCO-20i ------------------------------------------------------------------------------------------------
def coco_category_ids() -> list[int]:
    """80 ids with gaps, like COCO's (1..90)."""
    return [i + 1 + i // 8 for i in range(80)]


def write_coco(root: Path) -> Path:
    """Fold 0's first two classes (positions 0 and 4). Class c0 is drawn in red (crowd part included) in
    images 1-3; class c4 is in images 2 and 4 and never red."""
    from pycocotools import mask as mask_utils

    cats = coco_category_ids()
    c0, c4 = cats[0], cats[4]
    h, w = 20, 24
    images, anns = [], []

    def poly(x0, y0, x1, y1):
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]

    plan = {1: [(c0, (2, 2, 10, 10))], 2: [(c0, (2, 2, 8, 8)), (c4, (12, 10, 22, 18))], 3: [(c0, (4, 4, 12, 12))]}
    plan[4] = [(c4, (3, 3, 9, 15))]
    aid = 1
    for img_id, objs in plan.items():
        name = f"COCO_val2014_{img_id:012d}.jpg"
        images.append({"id": img_id, "file_name": name, "height": h, "width": w})
        red = np.zeros((h, w), np.uint8)
        for cat, box in objs:
            seg = poly(*box)
            anns.append({"id": aid, "image_id": img_id, "category_id": cat, "segmentation": seg, "iscrowd": 0,
                         "area": 1.0, "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})  # fmt: skip
            aid += 1
            if cat == c0:
                rle = mask_utils.frPyObjects(seg, h, w)
                red |= mask_utils.decode(mask_utils.merge(rle)).astype(np.uint8) * 255
        if img_id == 3:  # a crowd region of c0, in RLE: part of the class mask
            crowd = square((h, w), 14, 18, 14, 20)
            rle = mask_utils.encode(np.asfortranarray(crowd))
            rle["counts"] = rle["counts"].decode()
            anns.append({"id": aid, "image_id": 3, "category_id": c0, "segmentation": rle, "iscrowd": 1,
                         "area": float(crowd.sum()), "bbox": [14, 14, 6, 4]})  # fmt: skip
            aid += 1
            red |= crowd * 255
        save_png(root / "val2014" / name.replace(".jpg", ".png"), rgb_from_red(red))
        (root / "val2014" / name.replace(".jpg", ".png")).rename(root / "val2014" / name)  # lossless "jpg"
    categories = [{"id": c, "name": f"class{c}", "supercategory": "x"} for c in cats]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2014.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": categories})
    )
    return root


# PASCAL-5i -----------------------------------------------------------------------------------------------
def write_pascal(root: Path) -> Path:
    """Images 1-4 of 12x12: class 1 drawn in red (its 255 border red too), class 2 not red."""
    ids = []
    for k in range(1, 5):
        lab = np.zeros((12, 12), np.uint8)
        red = np.zeros((12, 12), np.uint8)
        if k != 4:
            lab[2:6, 2:6] = 1
            lab[1, 1:7] = 255  # border: red (a false positive if it were scored)
            red[1:6, 2:6] = 255
            red[1, 1:7] = 255
        if k >= 3:
            lab[8:11, 6:11] = 2
        key = f"2007_{k:06d}"
        ids.append(key)
        save_png(root / "SegmentationClassAug" / f"{key}.png", lab)
        save_png(root / "JPEGImages" / f"{key}.png", rgb_from_red(red))
        (root / "JPEGImages" / f"{key}.png").rename(root / "JPEGImages" / f"{key}.jpg")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    return root


# ADE20K --------------------------------------------------------------------------------------------------
def write_ade(root: Path) -> Path:
    """Training: t1 {1}, t2 {1, 2}, t3 {2}. Validation v1: category 1 (red) + 'other' (0, partly red);
    v2: category 2 (not red)."""
    base = root / "ADEChallengeData2016"

    def put(split, stem, lab, red):
        save_png(base / "annotations" / split / f"{stem}.png", lab)
        p = base / "images" / split / f"{stem}.png"
        save_png(p, rgb_from_red(red))
        p.rename(p.with_suffix(".jpg"))

    shape = (10, 10)
    t1 = np.full(shape, 3, np.uint8)
    t1[:5] = 1
    t2 = np.full(shape, 1, np.uint8)
    t2[5:] = 2
    t3 = np.full(shape, 2, np.uint8)
    for stem, lab in (("ADE_train_1", t1), ("ADE_train_2", t2), ("ADE_train_3", t3)):
        put("training", stem, lab, np.zeros(shape, np.uint8))
    v1 = np.full(shape, 5, np.uint8)
    v1[:4] = 1  # 40 px of category 1, red
    v1[8:] = 0  # 20 px of 'other', half red
    r1 = np.zeros(shape, np.uint8)
    r1[:4] = 255
    r1[8:, :5] = 255
    v2 = np.full(shape, 2, np.uint8)  # 100 px of category 2, not red
    put("validation", "ADE_val_1", v1, r1)
    put("validation", "ADE_val_2", v2, np.zeros(shape, np.uint8))
    return root


# DAVIS-2017 ----------------------------------------------------------------------------------------------
def davis_frames() -> list[np.ndarray]:
    """5 frames 20x30: object 1 A = rows 2-5 x cols 2-5, object 2 B = rows 10-13 x cols 10-13.
    f1 = f0; f2: object 2 gone; f3: object 1 moved to cols 14-17; f4 (last, unscored): empty."""
    shape = (20, 30)
    f0 = np.zeros(shape, np.uint8)
    f0[2:6, 2:6] = 1
    f0[10:14, 10:14] = 2
    f2 = f0.copy()
    f2[f2 == 2] = 0
    f3 = f0.copy()
    f3[f3 == 1] = 0
    f3[2:6, 14:18] = 1
    f3[0, 0] = 255  # void
    return [f0, f0.copy(), f2, f3, np.zeros(shape, np.uint8)]


def write_davis(root: Path, sequences: tuple[str, ...] = ("bear", "camel")) -> Path:
    for seq in sequences:
        for t, lab in enumerate(davis_frames()):
            save_png(root / "Annotations" / "480p" / seq / f"{t:05d}.png", lab, palette=True)
            save_jpg(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", rgb_from_red(np.zeros_like(lab)))
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(sequences) + "\n")
    return root


# CVC-ClinicDB and a user folder --------------------------------------------------------------------------
def write_clinicdb(root: Path) -> Path:
    """1: the example; 2: red = mask (IoU 1); 3: red covers half the mask (IoU 1/2); 4: no polyp, no red."""
    shape = (8, 8)
    m = square(shape, 2, 6, 2, 6)  # 16 px
    half = square(shape, 2, 4, 2, 6)  # 8 px
    plan = {1: (m, m), 2: (m, m), 3: (m, half), 4: (np.zeros(shape, np.uint8), np.zeros(shape, np.uint8))}
    for n, (mask, red) in plan.items():
        for folder, arr in (("Original", rgb_from_red(red * 255)), ("Ground Truth", mask * 255)):
            p = root / folder / f"{n}.tif"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.astype(np.uint8)).save(p)
    return root


def write_user_folder(root: Path) -> Path:
    """Labels 0..2; the fake predictor answers red // 100. a: the example; b: left half label 1 (red 150),
    right half label 2 (red 250): perfect; c: all label 1 but red 250: answered 2."""
    shape = (4, 4)
    a = np.zeros(shape, np.uint8)
    a[:2] = 1
    a[2:] = 2
    b = np.ones(shape, np.uint8)
    b[:, 2:] = 2
    red_b = np.where(b == 1, 150, 250)
    c = np.ones(shape, np.uint8)
    for stem, lab, red in (("a", a, a * 100), ("b", b, red_b), ("c", c, np.full(shape, 250))):
        save_png(root / "masks" / f"{stem}.png", lab)
        save_png(root / "images" / f"{stem}.png", rgb_from_red(red))
    return root
