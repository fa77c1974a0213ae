"""Scene and person parsing readers: ADE20K (SceneParsing), PASCAL VOC (+ SBD), Cityscapes, LIP.

Layouts (as the datasets unpack):

* ADE20K SceneParsing: ``ROOT/images/training/ADE_train_*.jpg`` and ``ROOT/annotations/training/*.png``;
  values 0 ("other", background here) and 1..150.
* PASCAL VOC 2012: ``ROOT/JPEGImages``, ``ROOT/SegmentationClass/*.png`` (palette PNGs whose indices are the
  classes 0..20, 255 = boundary, ignored), ``ROOT/ImageSets/Segmentation/{train,val}.txt``.
  SBD (``SBD/dataset``): ``img/*.jpg``, ``cls/*.mat`` (``GTcls.Segmentation``), ``train.txt``, ``val.txt``.
  With SBD the training split is the usual "train_aug": VOC train + SBD train + SBD val, minus VOC val.
* Cityscapes: ``ROOT/leftImg8bit/train/CITY/*_leftImg8bit.png`` and
  ``ROOT/gtFine/train/CITY/*_gtFine_labelIds.png``; label ids map to the 19 train ids, the rest ignored.
* LIP: ``ROOT/TrainVal_images/train_images/*.jpg``, ``ROOT/TrainVal_images/train_id.txt`` and
  ``ROOT/TrainVal_parsing_annotations/train_segmentations/*.png`` (values 0..19, 0 background).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seggpt.data.base import IGNORE, SEMANTIC, DataError
from seggpt.data.pairs import pair_source
from seggpt.data.readers.base import (
    LabelDataset,
    check_same_size,
    id_table,
    map_ids,
    read_index_png,
    read_list,
    read_rgb,
    require_dir,
)


class _ImageLabelList(LabelDataset):
    """Items are (image path, label path) with a lookup table from raw label values to our ids."""

    seg_type = SEMANTIC

    def __init__(self, items: list[tuple[Path, Path]], table: np.ndarray, name: str, num_classes: int) -> None:
        if not items:
            raise FileNotFoundError(f"{name}: no images found")
        self.items, self.table, self.name, self.num_classes = items, table, name, num_classes

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, i: int) -> str:
        return f"{self.items[i][0]} + {self.items[i][1]}"

    def read_raw(self, label_path: Path, image_path: Path) -> np.ndarray:
        return read_index_png(label_path, f"label map for {image_path.name}:")

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, lab_path = self.items[i]
        image = read_rgb(img_path)
        raw = self.read_raw(lab_path, img_path)
        check_same_size(image, raw, img_path, lab_path)
        return image, map_ids(raw, self.table, lab_path)


class ADE20K(_ImageLabelList):
    def __init__(self, root: str | os.PathLike, split: str = "training") -> None:
        root = Path(root)
        img_dir = require_dir(root / "images" / split, "ADE20K images")
        ann_dir = require_dir(root / "annotations" / split, "ADE20K annotations")
        items = [(p, ann_dir / (p.stem + ".png")) for p in sorted(img_dir.glob("*.jpg"))]
        super().__init__(items, id_table(151), f"ade20k_{split}", 150)


# PASCAL VOC + SBD ---------------------------------------------------------------------------------------
class VOC(_ImageLabelList):
    """PASCAL VOC 2012 segmentation, optionally with the SBD augmentation (``sbd_root``)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", sbd_root: str | os.PathLike | None = None):
        root = Path(root)
        require_dir(root / "JPEGImages", "VOC images")
        sets = root / "ImageSets" / "Segmentation"
        ids = read_list(sets / f"{split}.txt")
        items = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in ids]
        if sbd_root is not None:
            sbd = Path(sbd_root)
            require_dir(sbd / "cls", "SBD class annotations")
            held_out = set(read_list(sets / "val.txt")) if split == "train" and (sets / "val.txt").is_file() else set()
            have = set(ids)
            for lst in ("train.txt", "val.txt"):
                for i in read_list(sbd / lst):
                    if i not in have and i not in held_out:
                        have.add(i)
                        items.append((sbd / "img" / f"{i}.jpg", sbd / "cls" / f"{i}.mat"))
        table = id_table(256, {**{v: v for v in range(21)}, 255: IGNORE})
        super().__init__(items, table, f"voc_{split}" + ("_aug" if sbd_root else ""), 20)

    def read_raw(self, label_path: Path, image_path: Path) -> np.ndarray:
        if label_path.suffix != ".mat":
            return super().read_raw(label_path, image_path)
        if not label_path.is_file():
            raise DataError(f"SBD annotation {label_path} for image {image_path} does not exist")
        import scipy.io

        try:
            gt = scipy.io.loadmat(str(label_path), struct_as_record=False, squeeze_me=True)["GTcls"]
            return np.asarray(gt.Segmentation).astype(np.int32)
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise DataError(
                f"cannot read SBD annotation {label_path} (expected a GTcls.Segmentation struct): {e}"
            ) from e


# Cityscapes ----------------------------------------------------------------------------------------------
# labelId -> trainId for the 19 evaluated classes (cityscapesScripts' labels.py); every other id is void.
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


class Cityscapes(_ImageLabelList):
    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        root = Path(root)
        img_root = require_dir(root / "leftImg8bit" / split, "Cityscapes leftImg8bit")
        gt_root = require_dir(root / "gtFine" / split, "Cityscapes gtFine")
        items = []
        for p in sorted(img_root.glob("*/*_leftImg8bit.png")):
            stem = p.name[: -len("_leftImg8bit.png")]
            items.append((p, gt_root / p.parent.name / f"{stem}_gtFine_labelIds.png"))
        # Label ids 0..33 (-1, license plate, never appears in the PNGs); ours = trainId + 1, void ignored.
        table = id_table(
            34, {**dict.fromkeys(range(34), IGNORE), **{k: v + 1 for k, v in CITYSCAPES_TRAIN_IDS.items()}}
        )
        super().__init__(items, table, f"cityscapes_{split}", 19)


# LIP -----------------------------------------------------------------------------------------------------
class LIP(_ImageLabelList):
    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        root = Path(root)
        img_dir = require_dir(root / "TrainVal_images" / f"{split}_images", "LIP images")
        seg_dir = require_dir(root / "TrainVal_parsing_annotations" / f"{split}_segmentations", "LIP parsing maps")
        id_file = root / "TrainVal_images" / f"{split}_id.txt"
        ids = read_list(id_file) if id_file.is_file() else [p.stem for p in sorted(img_dir.glob("*.jpg"))]
        items = [(img_dir / f"{i}.jpg", seg_dir / f"{i}.png") for i in ids]
        super().__init__(items, id_table(20), f"lip_{split}", 19)


# Source factories for configs ----------------------------------------------------------------------------
def ade20k_source(root: str, split: str = "training", **options):
    return pair_source(ADE20K(root, split), **options)


def voc_source(root: str, split: str = "train", sbd_root: str | None = None, **options):
    return pair_source(VOC(root, split, sbd_root), **options)


def cityscapes_source(root: str, split: str = "train", **options):
    return pair_source(Cityscapes(root, split), **options)


def lip_source(root: str, split: str = "train", **options):
    return pair_source(LIP(root, split), **options)
