"""PASCAL-5i few-shot benchmark: the 20 VOC classes in 4 folds of 5, 1000 episodes a fold, seed 0.

Fold f holds classes 5f+1 .. 5f+5 (VOC order: fold 0 = aeroplane, bicycle, bird, boat, bottle). Queries and
supports are VOC 2012 val images (``ImageSets/Segmentation/val.txt``, or ``--split-file`` with one image id
per line) with SBD-augmented class masks; label 255 (object borders) is ignored in scoring.
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
  ImageSets/Segmentation/val.txt       the evaluation image ids (or --split-file)
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
    """The image list, after checking the folders exist."""
    require_dir(data, LAYOUT, "PASCAL-5i")
    require_dir(data / "JPEGImages", LAYOUT, "VOC images")
    require_dir(data / "SegmentationClassAug", LAYOUT, "SBD-augmented masks")
    split = Path(options.split_file) if options.split_file else data / "ImageSets" / "Segmentation" / "val.txt"
    return require_file(split, LAYOUT, "image list")


def load(data: Path, options: EvalOptions) -> tuple[VOCData, list[str], dict[int, list[str]]]:
    """Reader, evaluation ids, and for each class the ids whose mask contains it."""
    split = check(data, options)
    ids = [ln.split()[0] for ln in split.read_text().splitlines() if ln.strip()]
    reader = VOCData(data)
    by_class: dict[int, list[str]] = {c: [] for c in range(1, 21)}
    for key in ids:
        if not (data / "SegmentationClassAug" / f"{key}.png").is_file():
            raise layout_error(f"mask SegmentationClassAug/{key}.png (listed in {split}) not found", LAYOUT)
        for c in np.unique(reader.labels(key)):
            if 1 <= c <= 20:
                by_class[int(c)].append(key)
    return reader, ids, by_class


def build_episodes(by_class: dict[int, list[str]], fold: int, options: EvalOptions) -> list[Episode]:
    classes = fold_classes(fold)
    queries = [(k, c) for c in classes for k in by_class[c] if len(by_class[c]) >= 2]
    seed = SEED if options.seed is None else options.seed
    episodes = sample_episodes(queries, by_class, options.shots, seed, options.episodes or EPISODES)
    return episodes[: options.limit] if options.limit else episodes


def collect(predictor: Any, data: Path, options: EvalOptions, shard: Shard, progress: bool) -> dict:
    reader, _, by_class = load(data, options)
    meters = {}
    for fold in options.folds if options.folds is not None else range(NUM_FOLDS):
        episodes = build_episodes(by_class, fold, options)
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
        "ignore_label": IGNORE,
        "split_file": str(options.split_file) if options.split_file else "ImageSets/Segmentation/val.txt",
    }
    paper = {"mIoU": PAPER["one-shot mIoU"] if options.shots == 1 else PAPER["few-shot mIoU"]}
    return BenchmarkResult(NAME, metrics, details, protocol, paper)


BENCHMARK = register(
    Benchmark(NAME, "PASCAL-5i few-shot (4 folds x 1000 episodes, seed 0)", LAYOUT, collect, summarize, check)
)
