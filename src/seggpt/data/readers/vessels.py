"""Retinal vessel readers: CHASE_DB1, DRIVE, HRF, STARE, with their manual annotations as they ship.

Layouts:

* DRIVE: ``ROOT/training/images/21_training.tif`` with ``ROOT/training/1st_manual/21_manual1.gif``.
* STARE: ``ROOT/stare-images/im0001.ppm`` with ``ROOT/labels-ah/im0001.ah.ppm`` (either may be ``.ppm.gz``).
* CHASE_DB1: ``ROOT/Image_01L.jpg`` with ``ROOT/Image_01L_1stHO.png``.
* HRF: ``ROOT/images/01_dr.JPG`` with ``ROOT/manual1/01_dr.tif``.

Vessel pixels (annotation > 127) are class 1, the rest background.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seggpt.data.base import SEMANTIC
from seggpt.data.pairs import pair_source
from seggpt.data.readers.base import Concat, LabelDataset, check_same_size, read_any_mask, read_rgb, require_dir


class _Vessels(LabelDataset):
    seg_type = SEMANTIC
    num_classes = 1

    def __init__(self, items: list[tuple[Path, Path]], name: str, where: Path) -> None:
        if not items:
            raise FileNotFoundError(f"{name}: no images found under {where}")
        self.items, self.name = items, name

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, i: int) -> str:
        return f"{self.items[i][0]} + {self.items[i][1]}"

    def classes(self, i: int) -> set[int]:
        return {1}

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        p, m = self.items[i]
        image = read_rgb(p)
        raw = read_any_mask(m, f"vessel annotation for {p.name}:")
        check_same_size(image, raw, p, m)
        return image, (raw > 127).astype(np.int32)


def _gz_or_plain(path: Path) -> Path:
    gz = path.with_name(path.name + ".gz")
    return gz if not path.exists() and gz.exists() else path


class DRIVE(_Vessels):
    def __init__(self, root: str | os.PathLike, split: str = "training") -> None:
        d = Path(root) / split
        imgs = sorted(require_dir(d / "images", "DRIVE images").glob("*.tif"))
        items = [(p, d / "1st_manual" / f"{p.stem.split('_')[0]}_manual1.gif") for p in imgs]
        super().__init__(items, "drive", d)


class STARE(_Vessels):
    def __init__(self, root: str | os.PathLike, annotator: str = "ah") -> None:
        root = Path(root)
        img_dir = require_dir(root / "stare-images", "STARE images")
        imgs = sorted(p for p in img_dir.iterdir() if p.name.endswith((".ppm", ".ppm.gz")))
        items = []
        for p in imgs:
            stem = p.name.split(".")[0]
            items.append((p, _gz_or_plain(root / f"labels-{annotator}" / f"{stem}.{annotator}.ppm")))
        super().__init__(items, "stare", root)


class CHASEDB1(_Vessels):
    def __init__(self, root: str | os.PathLike) -> None:
        root = require_dir(Path(root), "CHASE_DB1")
        items = [(p, root / f"{p.stem}_1stHO.png") for p in sorted(root.glob("Image_*.jpg"))]
        super().__init__(items, "chase_db1", root)


class HRF(_Vessels):
    def __init__(self, root: str | os.PathLike) -> None:
        root = Path(root)
        img_dir = require_dir(root / "images", "HRF images")
        imgs = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        items = [(p, root / "manual1" / f"{p.stem}.tif") for p in imgs]
        super().__init__(items, "hrf", root)


def vessels_source(
    chase_db1: str | None = None,
    drive: str | None = None,
    hrf: str | None = None,
    stare: str | None = None,
    **options,
):
    """The four retinal vessel sets as one source (vessel is one shared class)."""
    parts: list[LabelDataset] = []
    if chase_db1:
        parts.append(CHASEDB1(chase_db1))
    if drive:
        parts.append(DRIVE(drive))
    if hrf:
        parts.append(HRF(hrf))
    if stare:
        parts.append(STARE(stare))
    if not parts:
        raise ValueError("vessels source: give at least one of chase_db1, drive, hrf, stare")
    return pair_source(Concat(parts, "vessels", separate_classes=False), **options)
