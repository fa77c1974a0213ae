"""COCO panoptic quality of prediction files in the COCO panoptic format.

Both ground truth and predictions are a JSON file (``annotations``: per image ``image_id``, ``file_name`` of a
PNG, ``segments_info`` with ``id``, ``category_id`` and, for the ground truth, ``iscrowd``) and a folder of
PNGs whose pixels encode segment ids as R + 256 G + 256^2 B (0 = void). The ground truth's ``categories`` give
``isthing``. Scoring follows :class:`seggpt.eval.metrics.PQMeter`.

The paper's panoptic number (34.4 PQ with a tuned prompt) comes from a step it does not describe (how painted
semantic colours become instance segments), so this project scores prediction files rather than guessing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from seggpt.eval.metrics import PQMeter, Segment, rgb_to_id
from seggpt.io import open_image


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    if not isinstance(d, dict) or "annotations" not in d:
        raise ValueError(f"{path} is not a COCO panoptic file: no 'annotations' list")
    return d


def _ids(folder: Path, name: str) -> np.ndarray:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"panoptic PNG {path} not found")
    with open_image(path, "panoptic PNG") as im:
        return rgb_to_id(np.asarray(im.convert("RGB")))


def score_panoptic(
    gt_json: str | os.PathLike,
    gt_folder: str | os.PathLike,
    pred_json: str | os.PathLike,
    pred_folder: str | os.PathLike,
) -> dict[str, Any]:
    """PQ / SQ / RQ in percent over All, Things and Stuff, and per category.

    Raises:
        FileNotFoundError: a JSON file or PNG is missing.
        ValueError: malformed JSON, an image without prediction, or PNGs of different sizes.
    """
    gt = _read_json(Path(gt_json), "ground-truth JSON")
    pred = _read_json(Path(pred_json), "prediction JSON")
    if "categories" not in gt:
        raise ValueError(f"{gt_json} has no 'categories' (needed for things / stuff)")
    categories = {int(c["id"]): bool(c.get("isthing", 0)) for c in gt["categories"]}
    preds = {a["image_id"]: a for a in pred["annotations"]}
    meter = PQMeter()
    for g in gt["annotations"]:
        p = preds.get(g["image_id"])
        if p is None:
            raise ValueError(f"no prediction for image {g['image_id']} ({g['file_name']})")
        gids, pids = _ids(Path(gt_folder), g["file_name"]), _ids(Path(pred_folder), p["file_name"])
        if gids.shape != pids.shape:
            raise ValueError(f"{p['file_name']} is {pids.shape[::-1]} but the ground truth is {gids.shape[::-1]}")
        gseg = {int(s["id"]): Segment(int(s["category_id"]), bool(s.get("iscrowd", 0))) for s in g["segments_info"]}
        pseg = {int(s["id"]): Segment(int(s["category_id"])) for s in p["segments_info"]}
        unknown = {s.category_id for s in pseg.values()} - set(categories)
        if unknown:
            raise ValueError(f"prediction {p['file_name']} uses unknown categories {sorted(unknown)}")
        meter.update(gids, gseg, pids, pseg)
    s = meter.summary(categories)
    out: dict[str, Any] = {
        k: {m: (100 * v if m != "n" else v) for m, v in s[k].items()} for k in ("All", "Things", "Stuff")
    }
    out["per_category"] = {c: {m: 100 * v for m, v in d.items()} for c, d in s["per_category"].items()}
    return out
