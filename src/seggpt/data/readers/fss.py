"""FSS-1000: ``ROOT/<class>/<k>.jpg`` with its binary mask ``ROOT/<class>/<k>.png``; one folder per class.

Masks are binarised at 128 (as the benchmark does). Each folder is one class, so "another image with the
class" is another image of the same folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seggpt.data.base import SEMANTIC
from seggpt.data.pairs import pair_source
from seggpt.data.readers.base import LabelDataset, check_same_size, read_any_mask, read_rgb, require_dir


class FSS1000(LabelDataset):
    seg_type = SEMANTIC

    def __init__(self, root: str | os.PathLike, classes: list[str] | None = None) -> None:
        root = require_dir(Path(root), "FSS-1000")
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        if classes is not None:
            wanted = set(classes)
            folders = [p for p in folders if p.name in wanted]
        self.name = "fss1000"
        self.class_names = [p.name for p in folders]
        self.num_classes = len(folders)
        self.items = [
            (img, img.with_suffix(".png"), k + 1) for k, d in enumerate(folders) for img in sorted(d.glob("*.jpg"))
        ]
        if not self.items:
            raise FileNotFoundError(f"no FSS-1000 class folders with .jpg images under {root}")

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, i: int) -> str:
        return f"{self.items[i][0]} + {self.items[i][1]}"

    def classes(self, i: int) -> set[int]:
        return {self.items[i][2]}

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        p, m, c = self.items[i]
        image = read_rgb(p)
        raw = read_any_mask(m, f"FSS-1000 mask for {p.name}:")
        check_same_size(image, raw, p, m)
        return image, np.where(raw >= 128, c, 0).astype(np.int32)


def fss1000_source(root: str, classes: list[str] | None = None, **options):
    return pair_source(FSS1000(root, classes), **options)
