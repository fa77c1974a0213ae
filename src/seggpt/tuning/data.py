"""What prompts are tuned on: a user's folder (``images/`` + ``masks/``) read as dataset class ids, resized to
the model; the classes it holds, and a seeded hold-out for validation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from seggpt.transforms import resize_image, resize_mask


class SegmentationData(Protocol):
    """What :func:`tune` reads: items of (image (3, h, w) in [0, 255], labels (h, w) int) at the model's image
    size. Labels are dataset class ids; 0 is background."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]: ...


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """A mask file as dataset class ids (H, W) int64 that mean the same in every file of a dataset.

    Palette PNGs give their raw indices (so a VOC-style 255 border stays 255, the ignore label); every other mask
    goes through :func:`seggpt.io.load_mask_array` (grey, 16-bit, binary 0/255 -> 0/1, lossy binary masks). An RGB
    colour mask gives ``r * 65536 + g * 256 + b`` per pixel (black is 0), so a class is named by its colour
    (``--classes '#ff0000'``) and is the same label in every file, whatever other colours a file holds.
    """
    from seggpt.io import load_mask_array, open_image

    path = Path(path)
    with open_image(path, "mask") as im:  # the reading path of every command: one clear error for a bad file
        if im.mode == "P":
            try:
                return np.asarray(im).astype(np.int64)
            except (OSError, ValueError, SyntaxError) as e:
                raise ValueError(f"cannot read mask {path}: {e}. Is it a complete image file?") from None
    a, kind = load_mask_array(path)
    if kind == "colours":
        c = a.astype(np.int64)
        return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
    return a


def parse_class(text: str) -> int:
    """A ``--classes`` entry: a label id (``3``) or a mask colour (``#ff8000``)."""
    text = text.strip()
    if text.startswith("#"):
        if len(text) != 7:
            raise ValueError(f"colour class {text!r} must look like #rrggbb")
        try:
            return int(text[1:], 16)
        except ValueError:
            raise ValueError(f"colour class {text!r} must look like #rrggbb") from None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"class {text!r} is neither a label id (an integer) nor a colour (#rrggbb)") from None


class FolderDataset:
    """The user-folder layout: ``DIR/images/<stem>.<ext>`` with ``DIR/masks/<stem>.<ext>`` (matching stems).

    ``load(i)`` gives the (H, W, 3) uint8 image and its (H, W) label map (:func:`read_label_map`) at full size,
    as the project's dataset readers do; :class:`ResizedDataset` brings items to the model's size.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        from seggpt.io import list_images

        root = Path(root).expanduser()
        img_dir, mask_dir = root / "images", root / "masks"
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise FileNotFoundError(
                f"{root} must contain images/ and masks/ (masks/<stem>.png beside images/<stem>.jpg)"
            )
        masks = {p.stem: p for p in list_images(mask_dir)}
        images = list_images(img_dir)
        missing = [p.name for p in images if p.stem not in masks]
        if missing:
            raise ValueError(f"{len(missing)} image(s) in {img_dir} have no mask in {mask_dir}: {missing[:5]}")
        if not images:
            raise ValueError(f"no images in {img_dir}")
        self.pairs = [(p, masks[p.stem]) for p in images]

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from seggpt.io import read_image

        img_path, mask_path = self.pairs[i]
        image, labels = read_image(img_path), read_label_map(mask_path)
        if image.shape[:2] != labels.shape:
            raise ValueError(
                f"{img_path.name} is {image.shape[1]}x{image.shape[0]} (WxH) but its mask {mask_path.name} is "
                f"{labels.shape[1]}x{labels.shape[0]}"
            )
        return image, labels

    def describe(self, i: int) -> str:
        return str(self.pairs[i][0])


class ResizedDataset:
    """Items of any reader with ``load(i) -> (image (H, W, 3) uint8, labels (H, W) int)`` (the project's dataset
    readers, :class:`FolderDataset`) as tensors at ``image_size``: image (3, h, w) uint8 (bicubic), labels (h, w)
    int64 (nearest). Cached in memory when there are at most ``cache_limit`` items, since tuning visits each many
    times."""

    def __init__(self, reader: Any, image_size: tuple[int, int], cache_limit: int = 4000) -> None:
        self.reader = reader
        self.image_size = tuple(image_size)
        self._cache: dict[int, tuple[Tensor, Tensor]] | None = {} if len(reader) <= cache_limit else None

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image, labels = self.reader.load(index)
        img = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)
        lab = torch.from_numpy(np.asarray(labels).astype(np.int64))
        item = (resize_image(img, self.image_size).round().to(torch.uint8), resize_mask(lab, self.image_size))
        if self._cache is not None:
            self._cache[index] = item
        return item


def open_folder(root: str | os.PathLike, image_size: tuple[int, int]) -> ResizedDataset:
    """A user folder (``images/`` + ``masks/``) ready for :func:`tune`."""
    return ResizedDataset(FolderDataset(root), image_size)


def dataset_classes(data: SegmentationData, ignore_index: int = 255) -> list[int]:
    """Every class id that appears in the dataset's masks, except background (0) and ``ignore_index``."""
    found: set[int] = set()
    for i in range(len(data)):
        found.update(torch.unique(data[i][1]).tolist())
    return sorted(c for c in found if c > 0 and c != ignore_index)


def _class_index(data: SegmentationData, classes: Sequence[int]) -> list[list[int]]:
    """For each class, the items whose labels contain it (reads every item once)."""
    where: list[list[int]] = [[] for _ in classes]
    for i in range(len(data)):
        present = set(torch.unique(data[i][1]).tolist())
        for k, c in enumerate(classes):
            if c in present:
                where[k].append(i)
    empty = [c for c, w in zip(classes, where, strict=True) if not w]
    if empty:
        raise ValueError(f"class(es) {empty} appear in none of the {len(data)} masks; check --classes")
    return where


class _Subset:
    """Some items of a dataset, in the given order."""

    def __init__(self, data: SegmentationData, items: Sequence[int]) -> None:
        self.data, self.items = data, list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.data[self.items[index]]


def _split_items(n: int, fraction: float, seed: int, keep: Sequence[int] = ()) -> tuple[list[int], list[int]]:
    """(training, held-out) item indices: ``round(fraction * n)`` held out (at least 1), drawn with ``seed`` from
    the items other than ``keep`` (the examples a prompt starts from stay training items)."""
    k = max(1, round(fraction * n))
    kept = set(keep)
    free = [i for i in range(n) if i not in kept]
    if k >= n or k > len(free):
        raise ValueError(f"val_fraction {fraction} of {n} items leaves nothing to tune on; lower it or add data")
    held = np.random.default_rng([seed, 7]).choice(free, size=k, replace=False)
    held_set = {int(i) for i in held}
    return [i for i in range(n) if i not in held_set], sorted(held_set)
