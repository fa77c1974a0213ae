"""What every dataset reader provides: images with integer label maps, read from the published layout.

A reader is a :class:`LabelDataset`: ``load(i) -> (image, labels)`` plus enough metadata for pair sampling
(which class ids appear in item ``i``). :mod:`seggpt.data.pairs` wraps it into a :class:`~seggpt.data.base.Source`
(semantic: example = another view of the same image or another image sharing a class; instance: two views).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from seggpt.data.base import IGNORE, SEMANTIC, DataError

log = logging.getLogger(__name__)


class LabelDataset:
    """Base class of the readers: a list of items, each an image with a label map.

    Label maps use the project's convention: 0 background, positive ids (dataset-wide class ids for semantic
    readers, per-image instance ids for instance readers), IGNORE (-1) for pixels out of the loss.
    """

    name: str = "dataset"
    seg_type: int = SEMANTIC
    # Number of foreground class ids (ids 1..num_classes); None when not fixed (instance ids, user folders).
    num_classes: int | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item i: (H, W, 3) uint8 image and (H, W) int32 label map of the same size."""
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """The file(s) behind item i, for error messages."""
        raise NotImplementedError

    def classes(self, i: int) -> set[int] | None:
        """Class ids present in item i when known from metadata without reading pixels; None = unknown."""
        return None


# Reading helpers shared by the readers ------------------------------------------------------------------
def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder {path} not found (is the dataset root right and unpacked?)")
    return path


def open_file(path: Path, what: str = "image") -> Image.Image:
    """PIL image from a file, decompressing ``.gz`` (STARE ships ``.ppm.gz``), through the package's one reading
    path (:func:`seggpt.io.open_image`: the pixel limit, one clear error for what is not an image); ``what`` names
    the file in errors ("image", "mask")."""
    from seggpt.io import open_image

    try:
        if path.suffix == ".gz":
            import gzip

            with gzip.open(path, "rb") as f:
                return open_image(f.read(), f"{what} {path}")
        return open_image(path, what)
    except ValueError as e:
        raise DataError(str(e)) from None


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Any image file -> (H, W, 3) uint8 (grey, palette, RGBA and 16-bit handled; ``.gz`` decompressed)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} does not exist")
    try:
        with open_file(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                a = (255 * a / max(a.max(), 1)).astype(np.uint8)
                return np.repeat(a[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def read_index_png(path: str | os.PathLike, what: str = "mask") -> np.ndarray:
    """A label image whose pixel values are ids (grey or palette PNG, raw indices kept) -> (H, W) int32."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    try:
        with open_file(path) as im:
            if im.mode in ("RGB", "RGBA"):
                raise DataError(f"{what} {path} is an RGB image; expected one channel of class ids (grey/palette)")
            # Palette ("P") images: np.asarray gives the indices, which are the class ids (VOC, LIP).
            return np.asarray(im).astype(np.int32)
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot read {what} {path}: {e}") from e


def read_any_mask(path: str | os.PathLike, what: str = "mask") -> np.ndarray:
    """A mask in any common encoding as it ships (gif/tif/ppm/png; grey, palette or RGB) -> (H, W) raw values.

    RGB masks are reduced to grey by their maximum channel (vessel sets ship white-on-black RGB files).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    try:
        with open_file(path) as im:
            # Palette and bilevel files (DRIVE .gif, some .tif) become 0..255 grey first.
            a = np.asarray(im.convert("L") if im.mode in ("P", "1") else im)
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {what} {path}: {e}") from e
    if a.ndim == 3:
        a = a[..., :3].max(axis=2)
    return a.astype(np.int32)


def check_same_size(image: np.ndarray, labels: np.ndarray, image_path: object, mask_path: object) -> None:
    if image.shape[:2] != labels.shape[:2]:
        raise DataError(
            f"size mismatch: image {image_path} is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} is "
            f"{labels.shape[1]}x{labels.shape[0]} (W x H)"
        )


def map_ids(raw: np.ndarray, table: np.ndarray, path: object, what: str = "class id") -> np.ndarray:
    """Map raw label values through a lookup table (raw value -> our id; -2 marks values that must not occur).

    Raises DataError naming the file and the unknown values.
    """
    if raw.size and (raw.min() < 0 or raw.max() >= len(table)):
        bad = sorted({int(v) for v in np.unique(raw) if v < 0 or v >= len(table)})[:10]
        raise DataError(f"unknown {what}s {bad} in {path} (valid: 0..{len(table) - 1})")
    out = table[raw]
    if (out == -2).any():
        bad = sorted({int(v) for v in np.unique(raw[out == -2])})[:10]
        raise DataError(f"unknown {what}s {bad} in {path}")
    return out.astype(np.int32)


def id_table(num_raw: int, mapping: dict[int, int] | None = None, default: int = -2) -> np.ndarray:
    """A lookup table for :func:`map_ids`: identity by default, ``mapping`` overrides, others ``default``."""
    t = np.full(num_raw, default, np.int64)
    if mapping is None:
        t[:] = np.arange(num_raw)
    else:
        for k, v in mapping.items():
            t[k] = v
    return t


def read_list(path: Path) -> list[str]:
    """A split file: one id per line (first whitespace-separated field), blank lines skipped."""
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} not found")
    return [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]


def files_with(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    suffixes = tuple(s.lower() for s in suffixes)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))


__all__ = [
    "IGNORE",
    "LabelDataset",
    "check_same_size",
    "files_with",
    "id_table",
    "map_ids",
    "read_any_mask",
    "read_index_png",
    "read_list",
    "read_rgb",
    "require_dir",
]


class Concat(LabelDataset):
    """Several readers as one. With ``separate_classes`` the class ids of each part are shifted so parts with
    different vocabularies (iSAID and loveDA) never share an id; without it ids are shared (vessel = vessel)."""

    def __init__(self, parts: list[LabelDataset], name: str, separate_classes: bool = True) -> None:
        if not parts:
            raise ValueError(f"{name}: no datasets given")
        if len({p.seg_type for p in parts}) != 1:
            raise ValueError(f"{name}: cannot mix semantic and instance datasets")
        self.parts, self.name, self.seg_type = parts, name, parts[0].seg_type
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.offsets = [0] * len(parts)
        if separate_classes:
            acc = 0
            for k, p in enumerate(parts):
                if p.num_classes is None:
                    raise ValueError(f"{name}: {p.name} has no fixed class count to offset by")
                self.offsets[k] = acc
                acc += p.num_classes
            self.num_classes = acc
        else:
            self.num_classes = max((p.num_classes or 0) for p in parts) or None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, i: int) -> tuple[int, int]:
        k = int(np.searchsorted(self.starts, i, side="right") - 1)
        return k, i - int(self.starts[k])

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        k, j = self._locate(i)
        image, labels = self.parts[k].load(j)
        if self.offsets[k]:
            labels = np.where(labels > 0, labels + self.offsets[k], labels)
        return image, labels

    def describe(self, i: int) -> str:
        k, j = self._locate(i)
        return self.parts[k].describe(j)

    def classes(self, i: int) -> set[int] | None:
        k, j = self._locate(i)
        c = self.parts[k].classes(j)
        return None if c is None else {x + self.offsets[k] for x in c}
