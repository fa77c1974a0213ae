"""COCO-20i few-shot benchmark: the 80 COCO classes in 4 folds of 20, 1000 episodes a fold, seed 0.

Fold split (the interleaved one SegGPT and HSNet use): number the 80 categories 0..79 in increasing category
id order; fold f holds positions {f + 4k : k = 0..19}, i.e. 1-based class indices f+1, f+5, ..., f+77. Fold 0
starts with person, airplane, boat. Queries and supports come from COCO 2014 val: each episode draws a class
uniformly among the fold's 20, then a query image of it, then ``shots`` other images of it as supports. A
class mask is the union of all the image's annotations of that class (crowd regions included). Reported: mIoU
per fold and their mean.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seggpt.eval._files import layout_error, read_rgb, require_dir, require_file
from seggpt.eval.distributed import Shard
from seggpt.eval.episodes import Episode, fold_report, merge_fold_meters, run_fewshot, sample_episodes
from seggpt.eval.registry import Benchmark, BenchmarkResult, EvalOptions, register

log = logging.getLogger(__name__)

NAME = "coco20i"
SEED = 0
EPISODES = 1000
NUM_FOLDS = 4
LAYOUT = """\
DIR/
  val2014/COCO_val2014_<id>.jpg           COCO 2014 validation images
  annotations/instances_val2014.json      COCO 2014 instance annotations
"""
PAPER = {"one-shot mIoU": 56.1, "few-shot mIoU": 67.9}


def fold_classes(fold: int, num_classes: int = 80, num_folds: int = NUM_FOLDS) -> list[int]:
    """0-based class positions of a fold: {fold + num_folds * k}."""
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in 0..{num_folds - 1}, got {fold}")
    return [fold + num_folds * k for k in range(num_classes // num_folds)]


@dataclass
class COCOData:
    """Items are image ids (as strings); class ids are COCO category ids."""

    root: Path
    coco: Any

    def image(self, key: str) -> np.ndarray:
        info = self.coco.imgs[int(key)]
        return read_rgb(self.root / "val2014" / info["file_name"])

    def mask(self, key: str, class_id: int) -> np.ndarray:
        info = self.coco.imgs[int(key)]
        out = np.zeros((info["height"], info["width"]), np.uint8)
        for ann in self.coco.imgToAnns[int(key)]:
            if ann["category_id"] == class_id:
                out |= self.coco.annToMask(ann).astype(np.uint8)
        return out


def check(data: Path | None, options: EvalOptions | None = None) -> Path:
    """The annotation file, after checking the folders exist (without reading the JSON)."""
    require_dir(data, LAYOUT, "COCO-20i")
    require_dir(data / "val2014", LAYOUT, "COCO 2014 val images")
    return require_file(data / "annotations" / "instances_val2014.json", LAYOUT, "COCO 2014 val annotations")


def load(data: Path) -> COCOData:
    ann = check(data)
    try:
        from pycocotools.coco import COCO
    except ImportError as e:  # pragma: no cover - pycocotools is a dependency of the eval extra
        raise ImportError("COCO-20i needs pycocotools: pip install pycocotools") from e
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco = COCO(str(ann))
    except Exception as e:  # json errors, missing keys
        raise layout_error(f"{ann} is not a COCO annotation file ({e})", LAYOUT) from e
    if len(coco.cats) != 80:
        raise layout_error(f"{ann} has {len(coco.cats)} categories, COCO has 80", LAYOUT)
    return COCOData(data, coco)


def build_episodes(reader: COCOData, fold: int, options: EvalOptions) -> tuple[list[Episode], list[int]]:
    """Episodes of one fold and its category ids."""
    cat_ids = sorted(reader.coco.cats)
    classes = [cat_ids[i] for i in fold_classes(fold)]
    items_by_class = {c: [str(i) for i in sorted(reader.coco.catToImgs.get(c, []))] for c in classes}
    items_by_class = {c: sorted(set(v), key=int) for c, v in items_by_class.items()}
    queries = [(k, c) for c in classes for k in items_by_class[c] if len(items_by_class[c]) >= 2]
    seed = SEED if options.seed is None else options.seed
    episodes = sample_episodes(
        queries, items_by_class, options.shots, seed, options.episodes or EPISODES, order="class-uniform"
    )
    if options.limit:
        episodes = episodes[: options.limit]
    return episodes, classes


def collect(predictor: Any, data: Path, options: EvalOptions, shard: Shard, progress: bool) -> dict:
    reader = load(data)
    meters = {}
    for fold in options.folds if options.folds is not None else range(NUM_FOLDS):
        episodes, classes = build_episodes(reader, fold, options)
        meters[fold] = run_fewshot(
            predictor, episodes, reader, classes, options.shots, options.ensemble, shard, progress
        )
    names = {c: reader.coco.cats[c]["name"] for c in reader.coco.cats}
    return {"meters": meters, "names": names}


def summarize(states: list[Any], options: EvalOptions) -> BenchmarkResult:
    merged = merge_fold_meters([s["meters"] for s in states])
    metrics, details = fold_report(merged, states[0]["names"])
    protocol = {
        "folds": sorted(merged),
        "episodes_per_fold": options.episodes or EPISODES,
        "shots": options.shots,
        "ensemble": options.ensemble or "feature",
        "seed": SEED if options.seed is None else options.seed,
        "fold_split": "fold f = classes at 0-based positions f + 4k of the 80 sorted COCO category ids",
        "episode_sampling": "class uniform over the fold, then a query image of it, supports distinct",
    }
    paper = {"mIoU": PAPER["one-shot mIoU"] if options.shots == 1 else PAPER["few-shot mIoU"]}
    return BenchmarkResult(NAME, metrics, details, protocol, paper)


BENCHMARK = register(Benchmark(NAME, "COCO-20i few-shot (4 folds x 1000 episodes, seed 0)", LAYOUT, collect, summarize))
