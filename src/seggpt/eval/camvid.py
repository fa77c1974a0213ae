"""CamVid one-shot semantic segmentation: one example per class, every validation image a target.

This project's protocol (the paper does not evaluate CamVid). For each of the 11 classes, ``shots`` example
images are drawn with the seed (default 0) from the training split among those where the class covers at least
1 % of the pixels (an example must show the class); the class's binary mask is the prompt. The model then
segments that class in every image of the validation split (101 images). Per class, foreground intersection and
union are summed over the targets (void pixels ignored); mIoU is their mean over the 11 classes, the few-shot
convention of FSS-1000 and COCO-20i (SEGGPT.md section 7).

With ``--split-file`` (one training image stem a line) the targets are those training images instead and the
examples come from the rest of the training split: a development protocol that leaves the validation split
untouched, for choosing between candidates (``configs/splits/camvid_dev.txt``: every 4th training image, 92
targets, examples from the other 275). Models trained on CamVid train have seen its targets, so it measures
fit, not transfer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seggpt.eval._files import layout_error, list_images, read_raw_mask, read_rgb, require_dir, split_file_stems
from seggpt.eval.distributed import Shard
from seggpt.eval.metrics import FewShotMeter
from seggpt.eval.registry import Benchmark, BenchmarkResult, EvalOptions, register

NAME = "camvid"
CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian", "bicyclist")
VOID = 11
MIN_EXAMPLE_AREA = 0.01
SEED = 0
LAYOUT = """\
DIR/                          (CamVid as prepared for SegNet)
  train/<name>.png|jpg        training images: where the examples come from
  trainannot/<name>.png       class ids 0..10, 11 = void
  val/<name>.png|jpg          validation images: the targets
  valannot/<name>.png
"""


def _split(data: Path, split: str) -> list[tuple[Path, Path]]:
    require_dir(data, LAYOUT, "CamVid")
    images = require_dir(data / split, LAYOUT, f"CamVid {split}")
    anns = require_dir(data / f"{split}annot", LAYOUT, f"CamVid {split}annot")
    out = []
    for img in list_images(images):
        ann = anns / f"{img.stem}.png"
        if not ann.is_file():
            raise layout_error(f"no annotation {ann.name} in {anns} for {img.name}", LAYOUT)
        out.append((img, ann))
    if not out:
        raise layout_error(f"no images in {images}", LAYOUT)
    return out


def _labels(path: Path) -> np.ndarray:
    a = read_raw_mask(path)
    if a.ndim != 2:
        raise layout_error(f"{path} is a colour image; CamVid annotations hold class ids", LAYOUT)
    return a.astype(np.int64)


def choose_examples(train: list[tuple[Path, Path]], shots: int, seed: int) -> dict[int, list[tuple[Path, Path]]]:
    """Class -> ``shots`` training pairs where the class covers at least :data:`MIN_EXAMPLE_AREA` of the image."""
    area = np.stack([np.bincount(_labels(a).ravel(), minlength=VOID + 1)[: VOID + 1] for _, a in train]).astype(float)
    area /= area.sum(axis=1, keepdims=True)
    out = {}
    for c in range(len(CLASSES)):
        rng = np.random.default_rng([seed, c])
        candidates = np.flatnonzero(area[:, c] >= MIN_EXAMPLE_AREA)
        if len(candidates) < shots:
            raise ValueError(f"class {CLASSES[c]}: only {len(candidates)} training images show it; lower --shots")
        out[c] = [train[i] for i in rng.choice(candidates, size=shots, replace=False)]
    return out


def split_pairs(data: Path, split_file: Path | None) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """(example pool, targets): train and val, or with ``split_file`` the training images it names as targets and
    the other training images as the pool."""
    train = _split(data, "train")
    if split_file is None:
        return train, _split(data, "val")
    by_stem = {img.stem: (img, ann) for img, ann in train}
    wanted = split_file_stems(split_file, set(by_stem), data / "train")
    chosen = set(wanted)
    pool = [pair for pair in train if pair[0].stem not in chosen]
    if not wanted or not pool:
        raise ValueError(f"{split_file} must name some but not all of the {len(train)} training images")
    return pool, [by_stem[w] for w in sorted(chosen)]


def collect(predictor: Any, data: Path, options: EvalOptions, shard: Shard, progress: bool) -> dict:
    seed = SEED if options.seed is None else options.seed
    pool, targets = split_pairs(data, options.split_file)
    examples = choose_examples(pool, options.shots, seed)
    targets = targets[: options.limit] if options.limit else targets
    images = {img: read_rgb(img) for img, _ in targets}
    truth = {img: _labels(ann) for img, ann in targets}
    meter = FewShotMeter(tuple(range(len(CLASSES))))
    work = shard.take(list(range(len(CLASSES))))
    if progress:
        from tqdm.auto import tqdm

        work = tqdm(work, desc="camvid classes", unit="class", disable=None)
    for c in work:
        kwargs: dict[str, Any] = {"task": "semantic", "num_labels": 1}
        if options.shots > 1 and options.ensemble:
            kwargs["ensemble"] = options.ensemble
        predictor.set_prompts(
            [read_rgb(img) for img, _ in examples[c]],
            [(_labels(a) == c).astype(np.uint8) for _, a in examples[c]],
            **kwargs,
        )
        preds = predictor.predict_batch([images[img] for img, _ in targets], batch_size=options.batch_size)
        for (img, _), pred in zip(targets, preds, strict=True):
            gt = truth[img]
            binary = np.where(gt == VOID, -1, (gt == c).astype(np.int64))
            meter.update(c, np.asarray(pred.labels) != 0, binary, ignore_index=-1)
    return {
        "meter": meter,
        "examples": {CLASSES[c]: [p.stem for p, _ in v] for c, v in examples.items()},
        "targets": len(targets),
    }


def summarize(states: list[Any], options: EvalOptions) -> BenchmarkResult:
    meter = states[0]["meter"]
    for s in states[1:]:
        meter = meter.merge(s["meter"])
    ious = meter.class_iou()
    metrics = {"mIoU": 100 * meter.miou(), "FB-IoU": 100 * meter.fb_iou()}
    details = {"class_iou": {CLASSES[i]: 100 * float(v) for i, v in enumerate(ious[1])}}
    target_split = "val" if options.split_file is None else f"train images in {options.split_file}"
    protocol = {
        "examples": states[0]["examples"],
        "example_split": "train" if options.split_file is None else "train, less the targets",
        "targets": f"{target_split} ({states[0]['targets']} images)",
        "shots": options.shots,
        "seed": SEED if options.seed is None else options.seed,
        "min_example_area": MIN_EXAMPLE_AREA,
        "mIoU": "mean over the 11 classes of the foreground IoU summed over all targets",
    }
    return BenchmarkResult(NAME, metrics, details, protocol, {})


BENCHMARK = register(
    Benchmark(
        NAME,
        "CamVid one-shot: one example per class from train, every val image a target (mIoU, 11 classes)",
        LAYOUT,
        collect,
        summarize,
        check=lambda data, options: split_pairs(data, options.split_file) and None,
    )
)
