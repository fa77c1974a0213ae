"""Aerial readers: iSAID (semantic colour masks) and LoveDA; the supplementary samples them as one source.

Layouts:

* iSAID: ``ROOT/train/images/P0000.png`` and ``ROOT/train/Semantic_masks/images/P0000_instance_color_RGB.png``
  (RGB colour masks with the devkit's 16-colour palette below). iSAID images are large (up to ~13k px), so
  they are cut into ``tile`` x ``tile`` windows (default 896, as the common preprocessing does).
* LoveDA: ``ROOT/Train/{Urban,Rural}/images_png/*.png`` and ``masks_png/*.png``; values 0 = no-data (ignored),
  1 = background, 2..7 = building, road, water, barren, forest, agriculture.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from seggpt.data.base import IGNORE, SEMANTIC, DataError
from seggpt.data.pairs import pair_source
from seggpt.data.readers.base import (
    Concat,
    LabelDataset,
    check_same_size,
    id_table,
    map_ids,
    read_index_png,
    read_rgb,
    require_dir,
)

# iSAID devkit colours (RGB) of background and the 15 classes: ship, storage tank, baseball diamond, tennis
# court, basketball court, ground track field, bridge, large vehicle, small vehicle, helicopter, swimming pool,
# roundabout, soccer ball field, plane, harbor.
ISAID_PALETTE = [
    (0, 0, 0), (0, 0, 63), (0, 63, 63), (0, 63, 0), (0, 63, 127), (0, 63, 191), (0, 63, 255), (0, 127, 63),
    (0, 127, 127), (0, 0, 127), (0, 0, 191), (0, 0, 255), (0, 191, 127), (0, 127, 191), (0, 127, 255),
    (0, 100, 155),
]  # fmt: skip


class ISAID(LabelDataset):
    seg_type = SEMANTIC
    num_classes = 15

    def __init__(self, root: str | os.PathLike, split: str = "train", tile: int | None = 896) -> None:
        root = Path(root)
        img_dir = require_dir(root / split / "images", "iSAID images")
        mask_dir = require_dir(root / split / "Semantic_masks" / "images", "iSAID semantic masks")
        self.name = f"isaid_{split}"
        self.items: list[tuple[Path, Path, tuple[int, int, int, int] | None]] = []
        for p in sorted(img_dir.glob("*.png")):
            m = mask_dir / f"{p.stem}_instance_color_RGB.png"
            box_list: list[tuple[int, int, int, int] | None] = [None]
            if tile:
                with Image.open(p) as im:  # header only: the size, not the pixels
                    w, h = im.size
                box_list = [
                    (x, y, min(x + tile, w), min(y + tile, h)) for y in range(0, h, tile) for x in range(0, w, tile)
                ]
            self.items += [(p, m, b) for b in box_list]
        if not self.items:
            raise FileNotFoundError(f"no iSAID images (*.png) in {img_dir}")
        codes = np.array([r << 16 | g << 8 | b for r, g, b in ISAID_PALETTE])
        self.code_to_id = dict(zip(codes.tolist(), range(16), strict=True))

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, i: int) -> str:
        p, m, b = self.items[i]
        return f"{p} + {m}" + (f" window {b}" if b else "")

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        p, m, box = self.items[i]
        image = read_rgb(p)
        if not m.is_file():
            raise DataError(f"iSAID semantic mask {m} for image {p} does not exist")
        rgb = read_rgb(m).astype(np.int64)
        check_same_size(image, rgb, p, m)
        if box is not None:
            x0, y0, x1, y1 = box
            image, rgb = image[y0:y1, x0:x1], rgb[y0:y1, x0:x1]
        code = rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]
        uniq, inv = np.unique(code, return_inverse=True)
        bad = [u for u in uniq.tolist() if u not in self.code_to_id]
        if bad:
            cols = [((u >> 16) & 255, (u >> 8) & 255, u & 255) for u in bad[:5]]
            raise DataError(f"colours {cols} in {m} are not iSAID class colours")
        labels = np.array([self.code_to_id[u] for u in uniq.tolist()], np.int32)[inv.reshape(code.shape)]
        return np.ascontiguousarray(image), labels


class LoveDA(LabelDataset):
    seg_type = SEMANTIC
    num_classes = 6

    def __init__(self, root: str | os.PathLike, split: str = "Train", scenes: tuple[str, ...] = ("Urban", "Rural")):
        root = Path(root)
        split = split.capitalize()
        self.name = f"loveda_{split.lower()}"
        self.items = []
        for scene in scenes:
            img_dir = require_dir(root / split / scene / "images_png", f"LoveDA {scene} images")
            mask_dir = root / split / scene / "masks_png"
            self.items += [(p, mask_dir / p.name) for p in sorted(img_dir.glob("*.png"))]
        if not self.items:
            raise FileNotFoundError(f"no LoveDA images under {root / split}")
        # 0 no-data -> ignored; 1 background -> 0; 2..7 -> classes 1..6.
        self.table = id_table(8, {0: IGNORE, 1: 0, **{v: v - 1 for v in range(2, 8)}})

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, i: int) -> str:
        return f"{self.items[i][0]} + {self.items[i][1]}"

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        p, m = self.items[i]
        image = read_rgb(p)
        raw = read_index_png(m, f"LoveDA mask for {p.name}:")
        check_same_size(image, raw, p, m)
        return image, map_ids(raw, self.table, m)


def isaid_source(root: str, split: str = "train", tile: int | None = 896, **options):
    return pair_source(ISAID(root, split, tile), **options)


def loveda_source(root: str, split: str = "Train", **options):
    return pair_source(LoveDA(root, split), **options)


def aerial_source(isaid_root: str | None = None, loveda_root: str | None = None, split: str = "train", **options):
    """iSAID and LoveDA as one source (the supplementary's "iSAID and loveDA aerial semantic" weight)."""
    parts: list[LabelDataset] = []
    if isaid_root:
        parts.append(ISAID(isaid_root, split, options.pop("tile", 896)))
    if loveda_root:
        parts.append(LoveDA(loveda_root, split))
    if not parts:
        raise ValueError("aerial source: give isaid_root and/or loveda_root")
    return pair_source(Concat(parts, "aerial", separate_classes=True), **options)
