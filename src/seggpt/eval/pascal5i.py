"""PASCAL-5i few-shot benchmark: the 20 VOC classes in 4 folds of 5, 1000 episodes a fold, seed 0.

Fold f holds classes 5f+1 .. 5f+5 (VOC order: fold 0 = aeroplane, bicycle, bird, boat, bottle). Queries and
supports are VOC 2012 val images with SBD-augmented class masks; label 255 (object borders) is ignored in
scoring. The query pairs (image, class) of a fold are taken in list order, starting over after the last one
until the 1000 episodes are done (as the standard HSNet evaluation does); supports are ``shots`` other images
of the class, drawn with the seed.

The list: ``ImageSets/Segmentation/val.txt`` (every fold class present in an image makes a pair, in class
order), or ``--split-file`` with one image id per line, or a folder holding ``fold0.txt`` .. ``fold3.txt`` whose
lines are ``<image id>__<class>`` pairs (the HSNet fold lists).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seggpt.eval._files import layout_error, read_raw_mask, read_rgb, require_dir, require_file
from seggpt.eval.distributed import Shard
from seggpt.eval.episodes import Episode, fold_report, merge_fold_meters, run_fewshot, sample_episodes
from seggpt.eval.metrics import IGNORE
from seggpt.eval.registry import Benchmark, BenchmarkResult, EvalOptions, register

log = logging.getLogger(__name__)

NAME = "pascal5i"
SEED = 0
EPISODES = 1000
NUM_FOLDS = 4
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
LAYOUT = """\
DIR/                                   (VOC2012 with the SBD-augmented masks, e.g. VOCdevkit/VOC2012)
  JPEGImages/<id>.jpg
  SegmentationClassAug/<id>.png        class labels 0..20, 255 = ignored border
  ImageSets/Segmentation/val.txt       the evaluation image ids (or --split-file: a list, or a folder of
                                       fold0.txt..fold3.txt with '<id>__<class>' lines)
"""
PAPER = {"one-shot mIoU": 83.2, "few-shot mIoU": 89.8}


def fold_classes(fold: int) -> list[int]:
    """VOC class labels (1..20) of a fold: 5f+1 .. 5f+5."""
    if not 0 <= fold < NUM_FOLDS:
        raise ValueError(f"fold must be in 0..{NUM_FOLDS - 1}, got {fold}")
    return list(range(5 * fold + 1, 5 * fold + 6))


@dataclass
class VOCData:
    root: Path

    def labels(self, key: str) -> np.ndarray:
        a = read_raw_mask(self.root / "SegmentationClassAug" / f"{key}.png")
        if a.ndim != 2:
            raise layout_error(f"SegmentationClassAug/{key}.png is a colour image, expected class labels", LAYOUT)
        return a

    def image(self, key: str) -> np.ndarray:
        return read_rgb(self.root / "JPEGImages" / f"{key}.jpg")

    def mask(self, key: str, class_id: int) -> np.ndarray:
        a = self.labels(key)
        out = (a == class_id).astype(np.uint8)
        out[a == IGNORE] = IGNORE
        return out


def check(data: Path | None, options: EvalOptions) -> Path:
    """The image list (or folder of per-fold lists), after checking the folders exist."""
    require_dir(data, LAYOUT, "PASCAL-5i")
    require_dir(data / "JPEGImages", LAYOUT, "VOC images")
    require_dir(data / "SegmentationClassAug", LAYOUT, "SBD-augmented masks")
    split = Path(options.split_file) if options.split_file else data / "ImageSets" / "Segmentation" / "val.txt"
    if split.is_dir():
        return split
    return require_file(split, LAYOUT, "image list")


def _split_for_fold(split: Path, fold: int) -> Path:
    if not split.is_dir():
        return split
    return require_file(split / f"fold{fold}.txt", LAYOUT, f"list of fold {fold}")


def read_list(path: Path) -> list[tuple[str, int | None]]:
    """Lines ``<id>`` (any class present) or ``<id>__<class>`` (one query pair, the HSNet fold-list format)."""
    out: list[tuple[str, int | None]] = []
    for ln in path.read_text().splitlines():
        tok = ln.split()[0] if ln.strip() else ""
        if not tok:
            continue
        if "__" in tok:
            key, cls = tok.rsplit("__", 1)
            if not cls.isdigit() or not 1 <= int(cls) <= 20:
                raise ValueError(f"{path}: bad line {ln!r}; expected '<image id>__<class 1..20>'")
            out.append((key, int(cls)))
        else:
            out.append((tok, None))
    if not out:
        raise layout_error(f"{path} lists no image", LAYOUT)
    return out


def fold_queries(reader: VOCData, split: Path, fold: int) -> tuple[list[tuple[str, int]], dict[int, list[str]]]:
    """The fold's query pairs in list order, and for each of its classes the images that contain it."""
    classes = fold_classes(fold)
    entries = read_list(_split_for_fold(split, fold))
    pairs: list[tuple[str, int]] = []
    for key, cls in entries:
        if not (reader.root / "SegmentationClassAug" / f"{key}.png").is_file():
            raise layout_error(f"mask SegmentationClassAug/{key}.png (listed in {split}) not found", LAYOUT)
        if cls is not None:
            pairs.append((key, cls))
        else:  # a plain id: one pair per fold class its mask contains
            present = set(np.unique(reader.labels(key)).tolist())
            pairs += [(key, c) for c in classes if c in present]
    pairs = [(k, c) for k, c in pairs if c in classes]
    by_class: dict[int, list[str]] = {c: [] for c in classes}
    for k, c in pairs:
        if k not in by_class[c]:
            by_class[c].append(k)
    queries = [(k, c) for k, c in pairs if len(by_class[c]) >= 2]
    return queries, by_class


def build_episodes(reader: VOCData, split: Path, fold: int, options: EvalOptions) -> list[Episode]:
    queries, by_class = fold_queries(reader, split, fold)
    seed = SEED if options.seed is None else options.seed
    episodes = sample_episodes(queries, by_class, options.shots, seed, options.episodes or EPISODES, order="cycle")
    return episodes[: options.limit] if options.limit else episodes


def collect(predictor: Any, data: Path, options: EvalOptions, shard: Shard, progress: bool) -> dict:
    split = check(data, options)
    reader = VOCData(data)
    meters = {}
    for fold in options.folds if options.folds is not None else range(NUM_FOLDS):
        episodes = build_episodes(reader, split, fold, options)
        meters[fold] = run_fewshot(
            predictor, episodes, reader, fold_classes(fold), options.shots, options.ensemble, shard, progress
        )
    return {"meters": meters}


def summarize(states: list[Any], options: EvalOptions) -> BenchmarkResult:
    merged = merge_fold_meters([s["meters"] for s in states])
    metrics, details = fold_report(merged, {i + 1: n for i, n in enumerate(VOC_CLASSES)})
    protocol = {
        "folds": sorted(merged),
        "episodes_per_fold": options.episodes or EPISODES,
        "shots": options.shots,
        "ensemble": options.ensemble or "feature",
        "seed": SEED if options.seed is None else options.seed,
        "fold_split": "fold f = VOC classes 5f+1..5f+5",
        "episode_order": "the fold's (image, class) pairs in list order, cycled",
        "ignore_label": IGNORE,
        "split_file": str(options.split_file) if options.split_file else "ImageSets/Segmentation/val.txt",
    }
    paper = {"mIoU": PAPER["one-shot mIoU"] if options.shots == 1 else PAPER["few-shot mIoU"]}
    return BenchmarkResult(NAME, metrics, details, protocol, paper)


BENCHMARK = register(
    Benchmark(NAME, "PASCAL-5i few-shot (4 folds x 1000 episodes, seed 0)", LAYOUT, collect, summarize, check)
)
