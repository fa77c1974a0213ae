"""FSS-1000 few-shot benchmark: 240 test classes x 10 images = 2400 episodes.

Every test image is the query of one episode; its supports are drawn (seed 0) from the other 9 images of its
class; masks are binarised at 128. The score is the few-shot mIoU over the 240 classes (and FB-IoU).

The test split is a list of 240 class folder names. The package ships FSS-1000's official one
(``seggpt/eval/data/fss1000_test_classes.txt``, the dataset repository's ``fss_test_set.txt``; the split HSNet
and its successors use, and SegGPT reports on), so the paper's protocol needs nothing but the images. Another
list, one class name per line, replaces it: ``--split-file``, or ``DIR/test.txt`` (or ``DIR/splits/test.txt``)
beside the data. The report's protocol names the list used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from seggpt.eval._files import layout_error, natural_key, read_binary_mask, read_rgb, require_dir
from seggpt.eval.distributed import Shard
from seggpt.eval.episodes import Episode, fold_report, merge_fold_meters, run_fewshot, sample_episodes
from seggpt.eval.registry import Benchmark, BenchmarkResult, EvalOptions, register

log = logging.getLogger(__name__)

NAME = "fss1000"
SEED = 0
LAYOUT = """\
DIR/                         (or DIR/fewshot_data/)
  <class>/1.jpg, 1.png, ..., 10.jpg, 10.png     one folder per class: image + binary mask (0/255)
  test.txt  (optional; or splits/test.txt, or --split-file)  test class names, one per line
                             (default: the official 240-class test split, shipped with the package)
"""
PAPER = {"one-shot mIoU": 85.6, "few-shot mIoU": 89.3}
# FSS-1000's official test split: 240 class names (package data).
OFFICIAL_SPLIT = "fss1000_test_classes.txt"
OFFICIAL_SPLIT_NAME = f"the official test split ({OFFICIAL_SPLIT})"


def official_split() -> list[str]:
    """The 240 class names of FSS-1000's official test split, in file order."""
    text = resources.files("seggpt.eval").joinpath("data", OFFICIAL_SPLIT).read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _root(data: Path) -> Path:
    require_dir(data, LAYOUT, "FSS-1000")
    nested = data / "fewshot_data"
    return nested if nested.is_dir() else data


def _split(data: Path, root: Path, options: EvalOptions) -> tuple[list[str], str]:
    """The test class names and where they came from: --split-file, a list beside the data, or the official one."""
    if options.split_file is not None:
        if not Path(options.split_file).is_file():
            raise FileNotFoundError(f"split file {options.split_file} not found")
        path = Path(options.split_file)
    else:
        found = [c for c in (data / "test.txt", data / "splits" / "test.txt", root / "test.txt") if c.is_file()]
        if not found:
            return official_split(), OFFICIAL_SPLIT_NAME
        path = found[0]
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return names, str(path)


@dataclass
class FSSData:
    """Items are keys ``<class>/<stem>``."""

    root: Path

    def image(self, key: str) -> np.ndarray:
        return read_rgb(self.root / f"{key}.jpg")

    def mask(self, key: str, class_id: int) -> np.ndarray:
        return read_binary_mask(self.root / f"{key}.png")


def build_episodes(data: Path, options: EvalOptions) -> tuple[list[Episode], list[str], FSSData]:
    """The benchmark's episodes (class ids are positions in the split file), class names and reader."""
    root = _root(data)
    names, split = _split(data, root, options)
    log.info("FSS-1000 test split: %s", split)
    # Sorted by name, as the standard evaluation orders the test classes (episode i is the same everywhere).
    classes = sorted(set(names))
    if not classes:
        raise ValueError(f"split file {split} lists no classes")
    missing = [name for name in classes if not (root / name).is_dir()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise layout_error(
            f"{len(missing)} of the {len(classes)} test classes listed in {split} have no folder under {root}: "
            f"{', '.join(missing[:5])}{more} (another split: --split-file)",
            LAYOUT,
        )
    items_by_class: dict[int, list[str]] = {}
    queries: list[tuple[str, int]] = []
    for cid, name in enumerate(classes):
        folder = root / name
        stems = sorted((p.stem for p in folder.glob("*.jpg") if (folder / f"{p.stem}.png").is_file()), key=natural_key)
        if len(stems) < 2:
            raise layout_error(f"class folder {folder} needs at least 2 image/mask pairs (<n>.jpg + <n>.png)", LAYOUT)
        items_by_class[cid] = [f"{name}/{s}" for s in stems]
        queries += [(k, cid) for k in items_by_class[cid]]
    seed = SEED if options.seed is None else options.seed
    episodes = sample_episodes(queries, items_by_class, options.shots, seed, options.episodes)
    if options.limit:
        episodes = episodes[: options.limit]
    return episodes, classes, FSSData(root)


def collect(predictor: Any, data: Path, options: EvalOptions, shard: Shard, progress: bool) -> dict:
    episodes, classes, reader = build_episodes(data, options)
    meter = run_fewshot(
        predictor, episodes, reader, range(len(classes)), options.shots, options.ensemble, shard, progress
    )
    return {"meters": {0: meter}, "names": dict(enumerate(classes)), "split": _split(data, _root(data), options)[1]}


def summarize(states: list[Any], options: EvalOptions) -> BenchmarkResult:
    merged = merge_fold_meters([s["meters"] for s in states])
    metrics, details = fold_report(merged, states[0]["names"])
    details = {"class_iou": details["folds"]["0"]["class_iou"], "episodes": details["folds"]["0"]["episodes"]}
    protocol = {
        "episodes": details["episodes"],
        "shots": options.shots,
        "ensemble": options.ensemble or "feature",
        "seed": SEED if options.seed is None else options.seed,
        "mask_threshold": 128,
        "split_file": states[0]["split"],
    }
    paper = {"mIoU": PAPER["one-shot mIoU"]} if options.shots == 1 else {"mIoU": PAPER["few-shot mIoU"]}
    return BenchmarkResult(NAME, metrics, details, protocol, paper)


BENCHMARK = register(Benchmark(NAME, "FSS-1000 few-shot (240 test classes, 2400 episodes)", LAYOUT, collect, summarize))
