"""ADE20K example-based semantic segmentation (supplementary Table S1).

For each of the 150 categories, k training images that contain it are drawn without replacement
(``default_rng([seed, category])`` over the sorted list of training images whose annotation holds the
category); the category is then predicted on *every* validation image with those k examples in a feature
ensemble. Per category, intersection, union and ground-truth area are summed over the validation images
(pixels labelled 0, "other", are ignored, as in the standard ADE20K evaluation), giving IoU and accuracy per
category; mIoU and mAcc average them. The paper runs seeds 1000, 2000, 3000 and 4000 and reports the best;
the report gives every seed and the best.

With ``--prompt-file`` (a multi-colour prompt learned by ``seggpt tune`` on the training set) the protocol is
plain semantic segmentation instead: one forward per validation image with the learned prompt, its colours
mapped back to ADE20K labels, mIoU / mAcc over the 150 categories (the paper's tuned-prompt row, 39.6 / 50.7).

Finding the training images of each category reads all 20,210 training annotations once; the index is cached
in ``$SEGGPT_CACHE`` (default ``~/.cache/seggpt``) keyed by the folder and its file listing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seggpt.eval import resume
from seggpt.eval._files import layout_error, read_raw_mask, read_rgb, require_dir
from seggpt.eval.distributed import Shard
from seggpt.eval.episodes import predict_binary
from seggpt.eval.metrics import SemanticMeter
from seggpt.eval.registry import Benchmark, BenchmarkResult, EvalOptions, register
from seggpt.io import atomic_write

log = logging.getLogger(__name__)

NAME = "ade20k"
NUM_CLASSES = 150
SEEDS = (1000, 2000, 3000, 4000)
LAYOUT = """\
DIR/                                           (the SceneParsing release; DIR may also contain it)
  ADEChallengeData2016/images/training/*.jpg
  ADEChallengeData2016/images/validation/*.jpg
  ADEChallengeData2016/annotations/training/*.png      labels 0..150, 0 = other (ignored)
  ADEChallengeData2016/annotations/validation/*.png
"""
# Table S1: examples -> (mIoU, mAcc).
PAPER = {1: (18.8, 27.4), 2: (25.0, 34.4), 4: (28.3, 37.7), 8: (30.1, 38.9), 16: (31.9, 40.4), 32: (33.0, 42.0)}
PAPER_TUNED = (39.6, 50.7)


def _root(data: Path) -> Path:
    require_dir(data, LAYOUT, "ADE20K")
    root = data / "ADEChallengeData2016" if (data / "ADEChallengeData2016").is_dir() else data
    for sub in ("images/training", "images/validation", "annotations/training", "annotations/validation"):
        require_dir(root / sub, LAYOUT, f"ADE20K {sub}")
    return root


@dataclass
class ADEData:
    root: Path

    def image(self, split: str, stem: str) -> np.ndarray:
        return read_rgb(self.root / "images" / split / f"{stem}.jpg")

    def labels(self, split: str, stem: str) -> np.ndarray:
        a = read_raw_mask(self.root / "annotations" / split / f"{stem}.png")
        if a.ndim != 2:
            raise layout_error(f"annotations/{split}/{stem}.png is a colour image, expected labels 0..150", LAYOUT)
        return a

    def stems(self, split: str) -> list[str]:
        stems = sorted(p.stem for p in (self.root / "annotations" / split).glob("*.png"))
        if not stems:
            raise layout_error(f"no annotations in {self.root / 'annotations' / split}", LAYOUT)
        return stems


def _cache_dir() -> Path:
    return Path(os.environ.get("SEGGPT_CACHE", Path.home() / ".cache" / "seggpt"))


def category_index(reader: ADEData, progress: bool = False, cache: bool = True) -> dict[int, list[str]]:
    """For each category 1..150, the sorted training stems whose annotation contains it (cached on disk)."""
    stems = reader.stems("training")
    key = hashlib.sha256(json.dumps([str(reader.root.resolve()), stems]).encode()).hexdigest()[:16]
    path = _cache_dir() / f"ade20k-index-{key}.json"
    if cache and path.is_file():
        try:
            return {int(c): v for c, v in json.loads(path.read_text()).items()}
        except (ValueError, OSError):
            log.warning("ignoring unreadable cache %s", path)
    it: Any = stems
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(stems, desc="indexing training masks", unit="img", disable=None)
    out: dict[int, list[str]] = {c: [] for c in range(1, NUM_CLASSES + 1)}
    for s in it:
        for c in np.unique(reader.labels("training", s)):
            if 1 <= c <= NUM_CLASSES:
                out[int(c)].append(s)
    if cache:
        try:
            # atomic: ranks writing the same cache at once are harmless
            atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(out)), overwrite=True)
        except OSError as e:
            log.warning("could not cache the ADE20K index in %s: %s", path.parent, e)
    return out


def sample_examples(index: dict[int, list[str]], shots: int, seed: int) -> dict[int, list[str]]:
    """k training stems per category, without replacement (all of them if fewer exist)."""
    out = {}
    for c, pool in index.items():
        if not pool:
            continue
        rng = np.random.default_rng([seed, c])
        out[c] = [pool[i] for i in rng.permutation(len(pool))[:shots]]
    return out


def check(data: Path | None, options: EvalOptions) -> None:
    ADEData(_root(data)).stems("validation")


def _bar(items: Any, progress: bool, desc: str) -> Any:
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="batch", disable=None)


def collect_tuned(predictor: Any, reader: ADEData, val: list[str], options: EvalOptions, shard: Shard, progress: bool):
    """Semantic segmentation of every validation image with a learned multi-colour prompt."""
    from seggpt.tuning import load_prompt_into

    prompt = load_prompt_into(predictor, options.prompt_file, ensemble=options.ensemble)
    # Predicted label k (1..K) is ADE20K category classes[k - 1]; meter index = category - 1, -1 = no category.
    lut = np.array([0, *prompt.classes], np.int64) - 1
    if lut.max() >= NUM_CLASSES:
        raise ValueError(f"{options.prompt_file} predicts classes {prompt.classes}, beyond ADE20K's 1..150")
    bs = options.batch_size
    chunks = [val[i : i + bs] for i in range(0, len(val), bs)]
    meter = SemanticMeter(NUM_CLASSES)
    for chunk in _bar(resume.units(shard.take(chunks), meter), progress, "tuned prompt"):
        preds = predictor.predict_batch([reader.image("validation", s) for s in chunk], batch_size=bs)
        for s, p in zip(chunk, preds, strict=True):
            gt = reader.labels("validation", s).astype(np.int64) - 1  # 'other' (0) -> -1: ignored
            meter.update(lut[np.asarray(p.labels)], gt)
    return {"meters": {"tuned": meter}, "validation_images": len(val)}


def collect(predictor: Any, data: Path, options: EvalOptions, shard: Shard, progress: bool) -> dict:
    reader = ADEData(_root(data))
    val = reader.stems("validation")
    if options.limit:
        val = val[: options.limit]
    if options.prompt_file is not None:
        return collect_tuned(predictor, reader, val, options, shard, progress)
    index = category_index(reader, progress and shard.is_main)
    missing = [c for c, v in index.items() if not v]
    if missing:
        log.warning("%d categories have no training image and are skipped: %s", len(missing), missing[:10])
    bs = options.batch_size
    chunks = [val[i : i + bs] for i in range(0, len(val), bs)]
    # Work units are (category, chunk of validation images): fixed batches whatever the world size, so a
    # sharded run computes exactly the same forwards as a single process.
    units = [(c, j) for c in sorted(index) if index[c] for j in range(len(chunks))]
    mine = shard.take(units)
    seeds = tuple(options.seeds) if options.seeds else SEEDS
    meters: dict[int, SemanticMeter] = {}
    for seed in seeds:
        examples = sample_examples(index, options.shots, seed)
        meter = SemanticMeter(NUM_CLASSES)
        current = None
        for c, j in _bar(resume.units(mine, meter), progress, f"seed {seed}"):
            if c != current:
                sup = examples[c]
                sup_images = [reader.image("training", s) for s in sup]
                sup_masks = [reader.labels("training", s) == c for s in sup]
                current = c
            gts = [reader.labels("validation", s) for s in chunks[j]]
            preds = predict_binary(
                predictor, sup_images, sup_masks, [reader.image("validation", s) for s in chunks[j]],
                ensemble=options.ensemble or "feature", batch_size=bs,
            )  # fmt: skip
            inter = np.zeros(NUM_CLASSES, np.int64)
            area_p = np.zeros(NUM_CLASSES, np.int64)
            area_g = np.zeros(NUM_CLASSES, np.int64)
            for p, g in zip(preds, gts, strict=True):
                valid = g != 0
                fg = g == c
                inter[c - 1] += np.count_nonzero(p & fg)
                area_p[c - 1] += np.count_nonzero(p & valid)
                area_g[c - 1] += np.count_nonzero(fg)
            meter.add(inter, area_p, area_g)
        meters[seed] = meter
    return {"meters": meters, "validation_images": len(val)}


def summarize(states: list[Any], options: EvalOptions) -> BenchmarkResult:
    merged: dict[int, SemanticMeter] = {}
    for s in states:
        for seed, m in s["meters"].items():
            merged[seed] = m if seed not in merged else merged[seed].merge(m)
    per_seed = {str(seed): {"mIoU": 100 * m.miou(), "mAcc": 100 * m.macc()} for seed, m in sorted(merged.items())}
    best = max(merged, key=lambda s: merged[s].miou())  # Table S1 reports the best seed
    metrics = {"mIoU": 100 * merged[best].miou(), "mAcc": 100 * merged[best].macc()}
    details = {
        "best_seed": best,
        "seeds": per_seed,
        # index = category - 1; None where undefined (the category absent from predictions and truth)
        "class_iou": [100 * float(v) if np.isfinite(v) else None for v in merged[best].class_iou()],
        "class_acc": [100 * float(v) if np.isfinite(v) else None for v in merged[best].class_acc()],
    }
    if options.prompt_file is not None:
        protocol = {
            "prompt_file": str(options.prompt_file),
            "validation_images": states[0]["validation_images"],
            "reported": "semantic segmentation with the learned prompt",
        }
        return BenchmarkResult(NAME, metrics, details, protocol, dict(zip(("mIoU", "mAcc"), PAPER_TUNED, strict=True)))
    protocol = {
        "shots": options.shots,
        "ensemble": options.ensemble or "feature",
        "seeds": sorted(merged),
        "validation_images": states[0]["validation_images"],
        "reported": "best seed by mIoU (as in Table S1)",
    }
    paper = dict(zip(("mIoU", "mAcc"), PAPER[options.shots], strict=True)) if options.shots in PAPER else {}
    return BenchmarkResult(NAME, metrics, details, protocol, paper)


BENCHMARK = register(
    Benchmark(NAME, "ADE20K example-based semantic segmentation (Table S1)", LAYOUT, collect, summarize, check)
)
