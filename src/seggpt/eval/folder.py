"""Fixed-example benchmarks on a folder of images and masks: CVC-ClinicDB and a user's own data.

Protocol (the paper states no more than "few-shot" for CVC-ClinicDB, so this one is this project's): k
example pairs are drawn once from the folder with the seed (default 0; ``extra["prompts"]`` names them
instead), and every other image is segmented with those k examples (feature ensemble by default).

* ``clinicdb``: masks binarised at 128. Reported: mIoU = mean over images of the polyp (foreground) IoU, the
  convention of the medical papers Table S2 compares with, plus mDice, the IoU of the pixels summed over the
  dataset, and FB-IoU.
* ``folder``: masks are label maps (binary 0/255 masks become 0/1; 255 in a multi-label map is ignored).
  Reported: semantic mIoU over the foreground labels, mIoU with background, mAcc, and per-label IoU.

With ``--prompt-file`` (a prompt learned by ``seggpt tune``) there are no example pairs: every image is a
target, and the prompt's labels 1..K are mapped back to the dataset labels it was tuned on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seggpt.eval._files import (
    find_with_suffix,
    layout_error,
    list_images,
    natural_key,
    read_binary_mask,
    read_raw_mask,
    read_rgb,
    require_dir,
    split_file_stems,
)
from seggpt.eval.distributed import Shard
from seggpt.eval.metrics import IGNORE, FewShotMeter, SemanticMeter, binary_intersection_union
from seggpt.eval.registry import Benchmark, BenchmarkResult, EvalOptions, register
from seggpt.eval.resume import units

log = logging.getLogger(__name__)

SEED = 0
CLINICDB_LAYOUT = """\
DIR/                          (CVC-ClinicDB; DIR may also be its PNG/ or TIF/ subfolder's parent)
  Original/<n>.tif            612 colonoscopy frames (.tif or .png)
  Ground Truth/<n>.tif        polyp masks, same stems (.tif or .png; 'GroundTruth/' also accepted)
"""
FOLDER_LAYOUT = """\
DIR/
  images/<stem>.<jpg|png|...>
  masks/<stem>.png            same stem: binary (0/255 or 0/1) or a label map (0 = background, 255 ignored)
"""
PAPER_CLINICDB = {"mIoU": 76.3}


@dataclass(frozen=True)
class Pair:
    stem: str
    image: Path
    mask: Path


def _pairs(images: Path, masks: Path, layout: str) -> list[Pair]:
    out = []
    for img in list_images(images):
        m = find_with_suffix(masks, img.stem, (".png", ".tif", ".tiff", ".bmp", ".jpg"))
        if m is None:
            raise layout_error(f"no mask for image {img.name} in {masks}", layout)
        out.append(Pair(img.stem, img, m))
    if len(out) < 2:
        raise layout_error(f"{images} holds {len(out)} image(s); need at least 2 (examples + targets)", layout)
    return sorted(out, key=lambda p: natural_key(p.stem))


def clinicdb_pairs(data: Path) -> list[Pair]:
    require_dir(data, CLINICDB_LAYOUT, "CVC-ClinicDB")
    for root in (data, data / "PNG", data / "TIF"):
        gt = next((root / n for n in ("Ground Truth", "GroundTruth", "Ground_Truth") if (root / n).is_dir()), None)
        if (root / "Original").is_dir() and gt is not None:
            return _pairs(root / "Original", gt, CLINICDB_LAYOUT)
    raise layout_error(f"no Original/ and Ground Truth/ folders under {data}", CLINICDB_LAYOUT)


def folder_pairs(data: Path, split_file: Path | None = None) -> list[Pair]:
    """The folder's (image, mask) pairs; with ``split_file`` (one stem a line) only those, e.g. a validation part."""
    require_dir(data, FOLDER_LAYOUT, "dataset")
    require_dir(data / "images", FOLDER_LAYOUT, "images")
    require_dir(data / "masks", FOLDER_LAYOUT, "masks")
    pairs = _pairs(data / "images", data / "masks", FOLDER_LAYOUT)
    if split_file is None:
        return pairs
    by_stem = {p.stem: p for p in pairs}
    wanted = split_file_stems(split_file, set(by_stem), data / "images")
    if len(wanted) < 2:
        raise ValueError(f"{split_file} lists {len(wanted)} image(s); need at least 2 (examples + targets)")
    return [by_stem[s] for s in sorted(set(wanted), key=natural_key)]


def read_label_mask(path: Path) -> np.ndarray:
    """A user mask as labels: 0/255 binary -> 0/1, otherwise the stored labels (255 stays 255 = ignored)."""
    a = read_raw_mask(path)
    if a.ndim == 3:
        raise ValueError(
            f"{path} is a colour mask; the folder benchmark needs label maps (grey or palette PNGs, one value per "
            "class) so that predictions can be compared with them"
        )
    values = np.unique(a)
    if set(values.tolist()) <= {0, 255}:
        return (a == 255).astype(np.uint8)
    return a.astype(np.int64)


def choose_prompts(pairs: list[Pair], options: EvalOptions) -> tuple[list[Pair], list[Pair]]:
    """(examples, targets): ``extra["prompts"]`` stems if given, else ``shots`` pairs drawn with the seed."""
    named = options.extra.get("prompts")
    if named:
        by_stem = {p.stem: p for p in pairs}
        unknown = [s for s in named if s not in by_stem]
        if unknown:
            raise ValueError(f"prompt stems {unknown} are not in the folder")
        examples = [by_stem[s] for s in named]
    else:
        if options.shots >= len(pairs):
            raise ValueError(f"--shots {options.shots} leaves no target among {len(pairs)} images")
        rng = np.random.default_rng(SEED if options.seed is None else options.seed)
        examples = [pairs[i] for i in rng.permutation(len(pairs))[: options.shots]]
    chosen = {p.stem for p in examples}
    targets = [p for p in pairs if p.stem not in chosen]
    return examples, targets[: options.limit] if options.limit else targets


def _learned_prompt(predictor: Any, options: EvalOptions) -> np.ndarray:
    """Load the learned prompt into the predictor; returns the lookup table predicted label -> dataset label."""
    from seggpt.tuning import load_prompt_into

    prompt = load_prompt_into(predictor, options.prompt_file, ensemble=options.ensemble)
    return np.array([0, *prompt.classes], np.int64)


def _all_targets(pairs: list[Pair], options: EvalOptions) -> list[Pair]:
    return pairs[: options.limit] if options.limit else pairs


def _batches(targets: list[Pair], batch_size: int) -> list[list[Pair]]:
    # Fixed batches whatever the world size: a sharded run computes exactly the forwards of a single one.
    return [targets[i : i + batch_size] for i in range(0, len(targets), batch_size)]


def _iterate(batches: list, shard: Shard, progress: bool, desc: str, *state: Any) -> Any:
    mine = units(shard.take(batches), *state)  # resumable: ``state`` is what the loop adds to (seggpt.eval.resume)
    if progress:
        from tqdm.auto import tqdm

        return tqdm(mine, desc=desc, unit="batch", disable=None)
    return mine


# CVC-ClinicDB --------------------------------------------------------------------------------------------


def collect_clinicdb(predictor: Any, data: Path, options: EvalOptions, shard: Shard, progress: bool) -> dict:
    examples, targets = choose_prompts(clinicdb_pairs(data), options)
    kwargs: dict[str, Any] = {"task": "semantic", "num_labels": 1}
    if len(examples) > 1 and options.ensemble:
        kwargs["ensemble"] = options.ensemble
    predictor.set_prompts([read_rgb(p.image) for p in examples], [read_binary_mask(p.mask) for p in examples], **kwargs)
    meter = FewShotMeter((1,))
    per_image: dict[str, tuple[int, int, int]] = {}  # stem -> (intersection, union, |pred| + |gt|)
    for batch in _iterate(_batches(targets, options.batch_size), shard, progress, "clinicdb", meter, per_image):
        preds = predictor.predict_batch([read_rgb(p.image) for p in batch], batch_size=options.batch_size)
        for p, pred in zip(batch, preds, strict=True):
            gt = read_binary_mask(p.mask)
            fg = np.asarray(pred.labels) != 0
            meter.update(1, fg, gt)
            inter, union = binary_intersection_union(fg, gt)
            per_image[p.stem] = (int(inter[1]), int(union[1]), int(fg.sum() + gt.sum()))
    return {"meter": meter, "per_image": per_image, "examples": [p.stem for p in examples]}


def summarize_clinicdb(states: list[Any], options: EvalOptions) -> BenchmarkResult:
    meter = states[0]["meter"]
    per_image: dict[str, tuple[int, int, int]] = {}
    for s in states[1:]:
        meter = meter.merge(s["meter"])
    for s in states:
        per_image.update(s["per_image"])
    # An image with neither a predicted nor a true polyp is a perfect answer: IoU = Dice = 1.
    ious = [i / u if u else 1.0 for i, u, _ in per_image.values()]
    dices = [2 * i / a if a else 1.0 for i, _, a in per_image.values()]
    metrics = {
        "mIoU": 100 * float(np.mean(ious)),
        "mDice": 100 * float(np.mean(dices)),
        "IoU (pixels summed)": 100 * meter.miou(),
        "FB-IoU": 100 * meter.fb_iou(),
    }
    protocol = {
        "examples": states[0]["examples"] or str(options.prompt_file),
        "targets": len(per_image),
        "shots": len(states[0]["examples"]),
        "ensemble": options.ensemble or "feature",
        "seed": SEED if options.seed is None else options.seed,
        "mIoU": "mean over target images of the foreground IoU",
        "mask_threshold": 128,
    }
    details = {"per_image_iou": {s: 100 * v for s, v in zip(per_image, ious, strict=True)}}
    return BenchmarkResult("clinicdb", metrics, details, protocol, PAPER_CLINICDB)


# A user's folder -----------------------------------------------------------------------------------------


def collect_folder(predictor: Any, data: Path, options: EvalOptions, shard: Shard, progress: bool) -> dict:
    pairs = folder_pairs(data, options.split_file)
    # The label set is the whole folder's, so every rank paints the examples with the same palette.
    num_labels = 0
    for p in pairs:
        m = read_label_mask(p.mask)
        num_labels = max(num_labels, int(m[m != IGNORE].max(initial=0)))
    num_labels = max(num_labels, 1)
    lut = None
    if options.prompt_file is not None:
        lut = _learned_prompt(predictor, options)
        num_labels = max(num_labels, int(lut.max()))
        examples, targets = [], _all_targets(pairs, options)
    else:
        examples, targets = choose_prompts(pairs, options)
        kwargs: dict[str, Any] = {"task": "semantic", "num_labels": num_labels}
        if len(examples) > 1 and options.ensemble:
            kwargs["ensemble"] = options.ensemble
        prompts = [np.where(m == IGNORE, 0, m) for m in (read_label_mask(p.mask) for p in examples)]
        predictor.set_prompts([read_rgb(p.image) for p in examples], prompts, **kwargs)
    meter = SemanticMeter(num_labels + 1)
    for batch in _iterate(_batches(targets, options.batch_size), shard, progress, "folder", meter):
        preds = predictor.predict_batch([read_rgb(p.image) for p in batch], batch_size=options.batch_size)
        for p, pred in zip(batch, preds, strict=True):
            gt = read_label_mask(p.mask)
            labels = np.asarray(pred.labels) if lut is None else lut[np.asarray(pred.labels)]
            if labels.shape != gt.shape:
                raise ValueError(f"{p.mask}: mask {gt.shape} and image {labels.shape} differ in size")
            meter.update(labels, gt)
    return {"meter": meter, "examples": [p.stem for p in examples], "targets": len(targets)}


def summarize_folder(states: list[Any], options: EvalOptions) -> BenchmarkResult:
    meter = states[0]["meter"]
    for s in states[1:]:
        meter = meter.merge(s["meter"])
    iou = meter.class_iou()
    fg = iou[1:]
    metrics = {
        "mIoU": 100 * float(np.nanmean(fg)) if np.isfinite(fg).any() else float("nan"),
        "mIoU (with background)": 100 * meter.miou(),
        "mAcc": 100 * meter.macc(),
    }
    details = {"class_iou": {str(c): (100 * float(v) if np.isfinite(v) else None) for c, v in enumerate(iou)}}
    protocol = {
        "examples": states[0]["examples"] or str(options.prompt_file),
        "targets": states[0]["targets"],
        "ensemble": options.ensemble or "feature",
        "seed": SEED if options.seed is None else options.seed,
        "mIoU": "mean over foreground labels of the IoU summed over all targets",
        "split_file": str(options.split_file) if options.split_file else None,
    }
    return BenchmarkResult("folder", metrics, details, protocol, {})


CLINICDB = register(
    Benchmark(
        "clinicdb",
        "CVC-ClinicDB few-shot polyp segmentation (Table S2)",
        CLINICDB_LAYOUT,
        collect_clinicdb,
        summarize_clinicdb,
        check=lambda data, options: clinicdb_pairs(data) and None,
    )
)
FOLDER = register(
    Benchmark(
        "folder",
        "your own images/ + masks/ folder",
        FOLDER_LAYOUT,
        collect_folder,
        summarize_folder,
        check=lambda data, options: folder_pairs(data, options.split_file) and None,
    )
)
