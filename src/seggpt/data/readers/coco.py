"""COCO-format readers: COCO instances, COCO panoptic (semantic), COCO-Stuff, and PACO (COCO-style JSON).

Layouts (as the datasets unpack):

* COCO: ``ROOT/annotations/instances_train2017.json``, images in ``ROOT/train2017/``.
* COCO panoptic: ``ROOT/annotations/panoptic_train2017.json`` and its PNGs in
  ``ROOT/annotations/panoptic_train2017/``; a PNG pixel's segment id is R + 256 G + 256^2 B.
* COCO-Stuff (stuffthingmaps): ``ROOT/images/train2017/*.jpg``, ``ROOT/annotations/train2017/*.png`` whose
  values are the COCO category id - 1 (0..181) and 255 for unlabeled.
* PACO-LVIS: ``ROOT/annotations/paco_lvis_v1_train.json``; image ``file_name`` entries are relative to the
  COCO root (``train2017/...``), given as ``images``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from seggpt.data.base import IGNORE, INSTANCE, SEMANTIC, DataError
from seggpt.data.pairs import pair_source
from seggpt.data.readers.base import (
    LabelDataset,
    check_same_size,
    id_table,
    map_ids,
    read_index_png,
    read_rgb,
    require_dir,
)


def _load_coco(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} not found")
    try:
        from pycocotools.coco import COCO
    except ImportError as e:  # pragma: no cover - dev extra
        raise ImportError("COCO readers need pycocotools: pip install pycocotools") from e
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        return COCO(str(path))


class _CocoJson(LabelDataset):
    """Shared part of readers over a COCO-style instance JSON (polygons and RLE via pycocotools)."""

    def __init__(self, ann_file: Path, image_root: Path, name: str) -> None:
        self.coco = _load_coco(ann_file)
        self.ann_file = ann_file
        self.image_root = image_root
        self.name = name
        self.cat_ids = sorted(self.coco.getCatIds())
        self.cat_index = {c: k + 1 for k, c in enumerate(self.cat_ids)}  # contiguous class ids 1..K
        self.num_classes = len(self.cat_ids)
        self.img_ids = [i for i in sorted(self.coco.getImgIds()) if self.coco.getAnnIds(imgIds=i)]

    def __len__(self) -> int:
        return len(self.img_ids)

    def _image(self, i: int) -> tuple[np.ndarray, dict, Path]:
        info = self.coco.imgs[self.img_ids[i]]
        path = self.image_root / info["file_name"]
        image = read_rgb(path)
        if image.shape[:2] != (info["height"], info["width"]):
            raise DataError(
                f"size mismatch: image {path} is {image.shape[1]}x{image.shape[0]} but {self.ann_file} says "
                f"{info['width']}x{info['height']}"
            )
        return image, info, path

    def _anns(self, i: int) -> list[dict]:
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=self.img_ids[i]))
        for a in anns:
            if a["category_id"] not in self.cat_index:
                raise DataError(
                    f"unknown category id {a['category_id']} in annotation {a.get('id')} of {self.ann_file}"
                )
        return anns

    def describe(self, i: int) -> str:
        return str(self.image_root / self.coco.imgs[self.img_ids[i]]["file_name"])

    def _mask(self, ann: dict, path: Path) -> np.ndarray:
        try:
            return self.coco.annToMask(ann).astype(bool)
        except Exception as e:  # noqa: BLE001 -- pycocotools raises bare Exceptions on bad polygons/RLE
            raise DataError(f"bad segmentation in annotation {ann.get('id')} for {path}: {e}") from e


class CocoInstances(_CocoJson):
    """COCO instance segmentation: one id per instance (larger ones painted first), crowd regions ignored."""

    seg_type = INSTANCE

    def __init__(self, root: str | os.PathLike, split: str = "train2017") -> None:
        root = Path(root)
        super().__init__(root / "annotations" / f"instances_{split}.json", root / split, f"coco_instance_{split}")
        self.num_classes = None  # instance ids are per image

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image, info, path = self._image(i)
        labels = np.zeros((info["height"], info["width"]), np.int32)
        anns = sorted(self._anns(i), key=lambda a: -a.get("area", 0))
        k = 0
        for a in anns:
            m = self._mask(a, path)
            if a.get("iscrowd", 0):
                labels[m & (labels == 0)] = IGNORE
            else:
                k += 1
                labels[m] = k
        return image, labels


class Paco(_CocoJson):
    """PACO-LVIS object and part categories as semantic labels: objects painted first, parts over them."""

    seg_type = SEMANTIC

    def __init__(self, root: str | os.PathLike, images: str | os.PathLike, split: str = "train") -> None:
        root = Path(root)
        super().__init__(root / "annotations" / f"paco_lvis_v1_{split}.json", Path(images), f"paco_{split}")
        self.is_part = {c["id"]: ":" in c.get("name", "") for c in self.coco.loadCats(self.cat_ids)}

    def classes(self, i: int) -> set[int]:
        return {self.cat_index[a["category_id"]] for a in self._anns(i)}

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image, info, path = self._image(i)
        labels = np.zeros((info["height"], info["width"]), np.int32)
        anns = sorted(self._anns(i), key=lambda a: (self.is_part[a["category_id"]], -a.get("area", 0)))
        for a in anns:
            labels[self._mask(a, path)] = self.cat_index[a["category_id"]]
        return image, labels


class CocoPanoptic(LabelDataset):
    """COCO panoptic as semantic labels: every segment painted with its category (things and stuff)."""

    seg_type = SEMANTIC

    def __init__(self, root: str | os.PathLike, split: str = "train2017") -> None:
        root = Path(root)
        self.ann_file = root / "annotations" / f"panoptic_{split}.json"
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"annotation file {self.ann_file} not found")
        data = json.loads(self.ann_file.read_text())
        self.png_root = require_dir(root / "annotations" / f"panoptic_{split}", "COCO panoptic PNGs")
        self.image_root = root / split
        self.name = f"coco_panoptic_{split}"
        self.cat_ids = sorted(c["id"] for c in data["categories"])
        self.cat_index = {c: k + 1 for k, c in enumerate(self.cat_ids)}
        self.num_classes = len(self.cat_ids)
        images = {im["id"]: im for im in data["images"]}
        self.items = []
        for a in data["annotations"]:
            if not a["segments_info"]:
                continue
            im = images.get(a["image_id"])
            if im is None:
                raise ValueError(f"{self.ann_file}: annotation for unknown image id {a['image_id']}")
            self.items.append((im["file_name"], a["file_name"], a["segments_info"]))

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, i: int) -> str:
        return f"{self.image_root / self.items[i][0]} + {self.png_root / self.items[i][1]}"

    def classes(self, i: int) -> set[int]:
        out = set()
        for s in self.items[i][2]:
            if s["category_id"] not in self.cat_index:
                raise DataError(f"unknown category id {s['category_id']} in {self.ann_file} ({self.items[i][1]})")
            out.add(self.cat_index[s["category_id"]])
        return out

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_name, png_name, segments = self.items[i]
        img_path, png_path = self.image_root / img_name, self.png_root / png_name
        image = read_rgb(img_path)
        if not png_path.is_file():
            raise DataError(f"panoptic PNG {png_path} for image {img_path} does not exist")
        rgb = read_rgb(png_path).astype(np.int64)
        check_same_size(image, rgb, img_path, png_path)
        seg = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        labels = np.full(seg.shape, IGNORE, np.int32)  # segment id 0 is VOID: out of the loss
        known = {0}
        for s in segments:
            if s["category_id"] not in self.cat_index:
                raise DataError(f"unknown category id {s['category_id']} in {self.ann_file} ({png_name})")
            labels[seg == s["id"]] = self.cat_index[s["category_id"]]
            known.add(s["id"])
        extra = set(np.unique(seg).tolist()) - known
        if extra:
            raise DataError(f"segment ids {sorted(extra)[:5]} in {png_path} are not listed in {self.ann_file}")
        return image, labels


class CocoStuff(LabelDataset):
    """COCO-Stuff 164k stuffthingmaps: values 0..181 are COCO category id - 1; 255 is unlabeled (ignored)."""

    seg_type = SEMANTIC
    num_classes = 182

    def __init__(self, root: str | os.PathLike, split: str = "train2017") -> None:
        root = Path(root)
        self.image_root = require_dir(root / "images" / split, "COCO-Stuff images")
        self.label_root = require_dir(root / "annotations" / split, "COCO-Stuff label maps")
        self.name = f"coco_stuff_{split}"
        self.images = sorted(p for p in self.image_root.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        self.table = id_table(256, {**{v: v + 1 for v in range(182)}, 255: IGNORE})

    def __len__(self) -> int:
        return len(self.images)

    def _label_path(self, i: int) -> Path:
        return self.label_root / (self.images[i].stem + ".png")

    def describe(self, i: int) -> str:
        return f"{self.images[i]} + {self._label_path(i)}"

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image = read_rgb(self.images[i])
        lp = self._label_path(i)
        raw = read_index_png(lp, f"label map for {self.images[i].name}:")
        check_same_size(image, raw, self.images[i], lp)
        return image, map_ids(raw, self.table, lp)


# Source factories for configs ----------------------------------------------------------------------------
def coco_instance_source(root: str, split: str = "train2017", **options):
    return pair_source(CocoInstances(root, split), **options)


def coco_panoptic_source(root: str, split: str = "train2017", **options):
    return pair_source(CocoPanoptic(root, split), **options)


def coco_stuff_source(root: str, split: str = "train2017", **options):
    return pair_source(CocoStuff(root, split), **options)


def paco_source(root: str, images: str, split: str = "train", **options):
    return pair_source(Paco(root, images, split), **options)
