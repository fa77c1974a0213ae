"""A plain "folder of images + folder of masks" reader for users' own data.

``images/abc.jpg`` pairs with ``masks/abc.png`` (same stem; any common image suffix). Masks may be
one-channel label images (grey or palette PNG: the value is the class id, 0 background) or RGB colour masks
(each colour one class, black background; colours are consistent across files, so a colour is a class).
``ignore_value`` (default 255 for one-channel masks) marks pixels out of the loss.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seggpt.data.base import IGNORE, INSTANCE, SEMANTIC, DataError
from seggpt.data.pairs import pair_source
from seggpt.data.readers.base import LabelDataset, check_same_size, files_with, open_file, read_rgb, require_dir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class FolderDataset(LabelDataset):
    """Images and masks in two folders, matched by file stem.

    Args:
        images: folder of images.
        masks: folder of masks (same stems).
        task: "semantic" (values/colours are classes across the set) or "instance" (per-image object ids).
        ignore_value: one-channel mask value excluded from the loss (None: none).
        name: source name in logs.
        split_file: the image stems to use, one a line (all without one): keeps a validation part out.
        max_side: keep decoded items in memory, shrunk to this short side (None: read every time, as stored).
    """

    def __init__(
        self,
        images: str | os.PathLike,
        masks: str | os.PathLike,
        task: str = "semantic",
        ignore_value: int | None = 255,
        name: str = "folder",
        split_file: str | os.PathLike | None = None,
        max_side: int | None = None,
    ) -> None:
        if task not in ("semantic", "instance"):
            raise ValueError(f"task must be 'semantic' or 'instance', got {task!r}")
        self.name = name
        self.seg_type = SEMANTIC if task == "semantic" else INSTANCE
        self.ignore_value = ignore_value
        img_dir = require_dir(Path(images), "images")
        mask_dir = require_dir(Path(masks), "masks")
        masks_by_stem = {p.stem: p for p in files_with(mask_dir, IMAGE_SUFFIXES)}
        self.items: list[tuple[Path, Path]] = []
        missing = []
        for p in files_with(img_dir, IMAGE_SUFFIXES):
            m = masks_by_stem.get(p.stem)
            if m is None:
                missing.append(p.name)
            else:
                self.items.append((p, m))
        if missing:
            raise FileNotFoundError(
                f"no mask in {mask_dir} for {len(missing)} image(s), e.g. {missing[:3]} "
                f"(a mask must have the image's file name stem, e.g. {Path(missing[0]).stem}.png)"
            )
        if not self.items:
            raise FileNotFoundError(f"no images found in {img_dir} (suffixes {', '.join(IMAGE_SUFFIXES)})")
        if split_file is not None:
            from seggpt.data.readers.photos import keep_only

            listed = {p: m for p, m in self.items}
            self.items = [(p, listed[p]) for p in keep_only(list(listed), split_file, "images")]
        self.max_side = max_side
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, i: int) -> str:
        return f"{self.items[i][0]} + {self.items[i][1]}"

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.max_side is None:
            return self._read(i)
        from seggpt.data.readers.photos import load_cached

        return load_cached(self._cache, i, self._read, self.max_side)

    def _read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, mask_path = self.items[i]
        image = read_rgb(img_path)
        try:
            with open_file(Path(mask_path), "mask") as im:
                if im.mode in ("RGB", "RGBA"):
                    rgb = np.asarray(im.convert("RGB")).astype(np.int32)
                    # One id per colour, the same across files: r * 65536 + g * 256 + b (black = 0).
                    labels = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
                else:
                    labels = np.asarray(im.convert("L") if im.mode == "LA" else im).astype(np.int32)
                    if labels.ndim != 2:
                        raise DataError(f"mask {mask_path} has an unsupported layout {labels.shape}")
                    if self.ignore_value is not None:
                        labels = np.where(labels == self.ignore_value, IGNORE, labels)
        except OSError as e:
            raise DataError(f"cannot read mask {mask_path}: {e}") from e
        check_same_size(image, labels, img_path, mask_path)
        return image, labels.astype(np.int32)


def folder_source(images: str, masks: str, task: str = "semantic", ignore_value: int | None = 255, **options):
    """Source factory for configs: ``{type: folder, images: DIR, masks: DIR, task: semantic|instance}``, optionally
    ``split_file: F`` (stems to use) and ``max_side: 320`` (keep decoded items in memory)."""
    name = options.pop("name", "folder")
    split_file, max_side = options.pop("split_file", None), options.pop("max_side", None)
    dataset = FolderDataset(images, masks, task, ignore_value, name=name, split_file=split_file, max_side=max_side)
    return pair_source(dataset, **options)
