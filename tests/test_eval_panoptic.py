"""PQ of COCO-panoptic prediction files: the hand case of test_metrics written as PNGs + JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from seggpt.eval.panoptic import score_panoptic


def _png(path, ids):
    ids = np.asarray(ids, np.int64)[None, :]
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def _write(tmp_path):
    # gt 1: category 1 (thing, 4 px), 2: category 2 (stuff, 3 px), 3: crowd of category 1, one void pixel;
    # an id of 300 checks the G channel. pred 5: category 1, 6: category 2, 7: category 1 (mostly crowd/void).
    _png(tmp_path / "gt" / "a.png", [1, 1, 1, 1, 300, 300, 300, 3, 3, 0])
    _png(tmp_path / "pred" / "a.png", [5, 5, 5, 0, 6, 6, 7, 7, 7, 7])
    gt = {
        "annotations": [{"image_id": 9, "file_name": "a.png", "segments_info": [
            {"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 300, "category_id": 2, "iscrowd": 0},
            {"id": 3, "category_id": 1, "iscrowd": 1}]}],
        "categories": [{"id": 1, "name": "thing", "isthing": 1}, {"id": 2, "name": "stuff", "isthing": 0}],
    }  # fmt: skip
    pred = {"annotations": [{"image_id": 9, "file_name": "a.png", "segments_info": [
        {"id": 5, "category_id": 1}, {"id": 6, "category_id": 2}, {"id": 7, "category_id": 1}]}]}  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    return tmp_path / "gt.json", tmp_path / "gt", tmp_path / "pred.json", tmp_path / "pred"


def test_score_panoptic_files(tmp_path):
    s = score_panoptic(*_write(tmp_path))
    # Matches: (1, 5) IoU 3/4, (300, 6) IoU 2/3; pred 7 lies 3/4 on void + crowd of its category: not an FP.
    assert s["Things"]["pq"] == pytest.approx(75.0)
    assert s["Stuff"]["pq"] == pytest.approx(200 / 3)
    assert s["All"]["pq"] == pytest.approx((75.0 + 200 / 3) / 2)
    assert s["All"]["rq"] == pytest.approx(100.0)


def test_score_panoptic_errors(tmp_path):
    gj, gf, pj, pf = _write(tmp_path)
    pj.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match="no prediction for image 9"):
        score_panoptic(gj, gf, pj, pf)
    with pytest.raises(FileNotFoundError):
        score_panoptic(gj, gf, tmp_path / "missing.json", pf)
