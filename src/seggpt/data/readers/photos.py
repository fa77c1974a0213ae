"""Readers of the real photo sets the embedded model trains on, each in its own published layout.

* :class:`CamVid`: street scenes, class-id PNGs (``train/``, ``trainannot/``, ``val/``, ``valannot/``; 0..10 are
  the 11 classes, 11 is void).
* :class:`YoloSegmentation`: the Ultralytics YOLO segmentation format (``images/SPLIT/*.jpg``,
  ``labels/SPLIT/*.txt``, one instance a line: ``class x1 y1 x2 y2 ...`` as a normalised polygon). Many users keep
  their own data this way; coco128-seg ships in it.
* :class:`DavisFramePairs`: two frames of one video of a DAVIS-layout folder (``JPEGImages/480p/SEQ/*.jpg``,
  ``Annotations/480p/SEQ/*.png``), an instance pair as video propagation sees it.
* Image/mask folders (Kvasir-SEG) are :class:`seggpt.data.folder.FolderDataset`.

Every reader takes ``split_file``: a list of the image stems (or sequences) it may use, so a validation part can
be kept out of training by construction (``configs/splits/``). Decoded images are kept in memory, shrunk to at
most ``max_side`` pixels on the short side (the model reads 224), because decoding is a large part of a step's
time on a CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from seggpt.data.augment import AugmentConfig, random_view
from seggpt.data.base import IGNORE, INSTANCE, SEMANTIC, DataError, Pair
from seggpt.data.readers.base import (
    LabelDataset,
    check_same_size,
    files_with,
    read_index_png,
    read_list,
    read_rgb,
    require_dir,
)

CAMVID_CLASSES = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
CAMVID_VOID = 11
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def keep_only(paths: list[Path], split_file: str | os.PathLike | None, what: str) -> list[Path]:
    """The paths whose stem is listed in ``split_file`` (all of them without one); every listed stem must exist."""
    if split_file is None:
        return paths
    wanted = read_list(Path(split_file))
    by_stem = {p.stem: p for p in paths}
    missing = [s for s in wanted if s not in by_stem]
    if missing:
        raise FileNotFoundError(f"{split_file} lists {len(missing)} {what} not found, e.g. {missing[:3]}")
    return [by_stem[s] for s in wanted]


def shrink(image: np.ndarray, labels: np.ndarray, max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Scale an item down so its short side is at most ``max_side`` (bicubic image, nearest labels)."""
    h, w = labels.shape
    if max_side is None or min(h, w) <= max_side:
        return image, labels
    f = max_side / min(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    img = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
    lab = np.asarray(Image.fromarray(labels.astype(np.int32), mode="I").resize(size, Image.NEAREST))
    return img, lab.astype(np.int32)


def load_cached(cache: dict, key, read, max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``read(key)`` shrunk to ``max_side`` (:func:`shrink`), decoded once and then kept in ``cache``."""
    if key not in cache:
        cache[key] = shrink(*read(key), max_side)
    return cache[key]


class CachedDataset(LabelDataset):
    """A :class:`LabelDataset` that keeps each decoded (and shrunk) item in memory after its first read."""

    max_side: int | None = None

    def __init__(self) -> None:
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return load_cached(self._cache, i, self.read, self.max_side)


class CamVid(CachedDataset):
    """CamVid as prepared for SegNet: ``SPLIT/*.png|jpg`` images and ``SPLITannot/*.png`` class ids.

    Ids become 1..11 (0 stays free for "background", which CamVid has not got: every pixel is a class), void
    becomes IGNORE.
    """

    seg_type = SEMANTIC
    num_classes = len(CAMVID_CLASSES)

    def __init__(self, root: str | os.PathLike, split: str = "train", max_side: int | None = 320) -> None:
        super().__init__()
        root = Path(root)
        img_dir = require_dir(root / split, f"CamVid {split} images")
        ann_dir = require_dir(root / f"{split}annot", f"CamVid {split} annotations")
        self.name, self.max_side = f"camvid_{split}", max_side
        self.items = []
        for p in files_with(img_dir, IMAGE_SUFFIXES):
            ann = ann_dir / f"{p.stem}.png"
            if not ann.is_file():
                raise FileNotFoundError(f"CamVid: no annotation {ann} for {p}")
            self.items.append((p, ann))
        if not self.items:
            raise FileNotFoundError(f"CamVid: no images in {img_dir}")

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, i: int) -> str:
        return str(self.items[i][0])

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, ann_path = self.items[i]
        image, raw = read_rgb(img_path), read_index_png(ann_path, "CamVid annotation")
        check_same_size(image, raw, img_path, ann_path)
        if raw.max(initial=0) > CAMVID_VOID:
            raise DataError(f"{ann_path}: class ids up to {raw.max()}, CamVid has 0..{CAMVID_VOID}")
        return image, np.where(raw == CAMVID_VOID, IGNORE, raw + 1).astype(np.int32)


def read_yolo_polygons(path: Path) -> list[tuple[int, np.ndarray]]:
    """A YOLO segmentation label file -> [(class, (n, 2) normalised polygon)]. An empty or missing file is []."""
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls, coords = int(parts[0]), np.array([float(v) for v in parts[1:]], np.float64)
        except ValueError:
            raise DataError(f"{path}:{n}: expected 'class x1 y1 x2 y2 ...' (numbers), got {line[:60]!r}") from None
        if cls < 0 or len(coords) < 6 or len(coords) % 2:
            raise DataError(f"{path}:{n}: a polygon needs a class >= 0 and at least 3 (x, y) points")
        out.append((cls, coords.reshape(-1, 2)))
    return out


class YoloSegmentation(CachedDataset):
    """The YOLO segmentation layout: ``images/SPLIT/NAME.jpg`` with ``labels/SPLIT/NAME.txt`` polygons.

    Args:
        root: the folder holding ``images/`` and ``labels/``.
        split: the sub-folder of both (``train2017`` for coco128-seg).
        task: "semantic": a pixel's id is its class + 1 (instances of a class merge); "instance": instances are
            numbered 1..n per image, larger ones painted first so small ones stay visible.
        split_file: image stems to use (all without one).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train2017",
        task: str = "semantic",
        split_file: str | os.PathLike | None = None,
        max_side: int | None = 320,
    ) -> None:
        super().__init__()
        if task not in ("semantic", "instance"):
            raise ValueError(f"task must be 'semantic' or 'instance', got {task!r}")
        root = Path(root)
        img_dir = require_dir(root / "images" / split, "YOLO images")
        self.label_dir = require_dir(root / "labels" / split, "YOLO labels")
        self.seg_type = SEMANTIC if task == "semantic" else INSTANCE
        self.name, self.max_side = f"yolo_{root.name}_{task}", max_side
        images = keep_only(files_with(img_dir, IMAGE_SUFFIXES), split_file, "images")
        self.polygons = [read_yolo_polygons(self.label_dir / f"{p.stem}.txt") for p in images]
        keep = [k for k, polys in enumerate(self.polygons) if polys]  # images without objects teach nothing
        self.images = [images[k] for k in keep]
        self.polygons = [self.polygons[k] for k in keep]
        if not self.images:
            raise FileNotFoundError(f"YOLO: no labelled images in {img_dir}")
        self.num_classes = 1 + max(c for polys in self.polygons for c, _ in polys) if task == "semantic" else None

    def __len__(self) -> int:
        return len(self.images)

    def describe(self, i: int) -> str:
        return str(self.images[i])

    def classes(self, i: int) -> set[int] | None:
        return {c + 1 for c, _ in self.polygons[i]} if self.seg_type == SEMANTIC else None

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image = read_rgb(self.images[i])
        h, w = image.shape[:2]
        canvas = Image.new("I", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        polys = self.polygons[i]
        area = [abs(_shoelace(p * (w, h))) for _, p in polys]
        for rank, k in enumerate(sorted(range(len(polys)), key=lambda k: -area[k]), 1):
            cls, poly = polys[k]
            pts = [(float(x * w), float(y * h)) for x, y in poly]
            draw.polygon(pts, fill=cls + 1 if self.seg_type == SEMANTIC else rank)
        return image, np.asarray(canvas).astype(np.int32)


def _shoelace(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


class DavisFramePairs:
    """A :class:`~seggpt.data.base.Source` of video pairs: two frames of one DAVIS sequence, at most
    ``max_gap`` frames apart, each a transformed view, the objects' ids shared (an instance task, as the video
    predictor runs it: an earlier frame and its mask are the example).

    Args:
        root: a DAVIS-layout folder.
        split_file: the sequences to use (one a line); default ``ImageSets/2017/train.txt`` when it exists.
        max_gap: the largest distance in frames between the two.
        augment: the view transform (light: consecutive frames differ already).
    """

    name = "davis_frames"

    def __init__(
        self,
        root: str | os.PathLike,
        split_file: str | os.PathLike | None = None,
        max_gap: int = 20,
        augment: AugmentConfig | None = None,
        max_side: int | None = 320,
    ) -> None:
        root = Path(root)
        jpeg = require_dir(root / "JPEGImages" / "480p", "DAVIS frames")
        anns = require_dir(root / "Annotations" / "480p", "DAVIS annotations")
        if split_file is None:
            split_file = root / "ImageSets" / "2017" / "train.txt"
        self.sequences = read_list(Path(split_file))
        if max_gap < 1:
            raise ValueError(f"max_gap must be >= 1, got {max_gap}")
        self.max_gap, self.max_side = max_gap, max_side
        self.augment = augment or AugmentConfig()
        self.frames: list[list[tuple[Path, Path]]] = []
        for seq in self.sequences:
            frames = sorted((jpeg / seq).glob("*.jpg"))
            if len(frames) < 2:
                raise FileNotFoundError(f"DAVIS: sequence {seq} has {len(frames)} frames in {jpeg / seq}")
            self.frames.append([(f, anns / seq / f"{f.stem}.png") for f in frames])
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return sum(len(f) for f in self.frames)

    def _read(self, frame: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        img_path, ann_path = self.frames[frame[0]][frame[1]]
        image, labels = read_rgb(img_path), read_index_png(ann_path, "DAVIS annotation")
        check_same_size(image, labels, img_path, ann_path)
        return image, np.where(labels == 255, IGNORE, labels).astype(np.int32)

    def _load(self, s: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        return load_cached(self._cache, (s, t), self._read, self.max_side)

    def sample_pair(self, rng: np.random.Generator, size: tuple[int, int]) -> Pair:
        lengths = np.array([len(f) for f in self.frames], np.float64)
        s = int(rng.choice(len(self.frames), p=lengths / lengths.sum()))
        n = len(self.frames[s])
        q = int(rng.integers(n))
        lo, hi = max(0, q - self.max_gap), min(n - 1, q + self.max_gap)
        e = int(rng.integers(lo, hi))  # another frame in [lo, hi], never q itself
        e = e + 1 if e >= q else e
        ex_img, ex_lab = random_view(*self._load(s, e), size, rng, self.augment)
        qu_img, qu_lab = random_view(*self._load(s, q), size, rng, self.augment)
        files = [str(self.frames[s][e][0]), str(self.frames[s][q][0])]
        return Pair(
            ex_img, ex_lab, qu_img, qu_lab, INSTANCE, False, {"source": self.name, "mode": "frames", "files": files}
        )


def _augment(options: dict) -> AugmentConfig | None:
    aug = options.pop("augment", None)
    if isinstance(aug, dict):
        return AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()})
    return aug


def camvid_source(root: str, split: str = "train", **options):
    """Config factory: ``{type: camvid, root: DIR, split: train, p_single: 0.5}``."""
    from seggpt.data.pairs import pair_source

    return pair_source(CamVid(root, split), **options)


def yolo_source(root: str, split: str = "train2017", task: str = "semantic", split_file: str | None = None, **options):
    """Config factory: ``{type: yolo, root: DIR, split: train2017, task: semantic|instance, split_file: F}``."""
    from seggpt.data.pairs import pair_source

    return pair_source(YoloSegmentation(root, split, task, split_file), **options)


def davis_frames_source(root: str, split_file: str | None = None, max_gap: int = 20, **options):
    """Config factory: ``{type: davis_frames, root: DIR, split_file: F, max_gap: 20}``."""
    aug = _augment(options)
    if options:
        raise ValueError(f"unknown options {sorted(options)} for davis_frames")
    return DavisFramePairs(root, split_file, max_gap, aug)
