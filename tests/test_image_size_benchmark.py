"""benchmarks/image_size.py: its table is formatted from the metrics as measured, its JSON rounds them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("image_size")


class _Predictor:
    """Stands in for SegGPTPredictor: a grid that follows the size, answers that are never looked at."""

    def __init__(self, weights, image_size):
        side = image_size // 8
        self.config = SimpleNamespace(grid_size=(2 * side, side))

    def set_prompts(self, images, masks):
        pass

    def predict_batch(self, targets):
        return [None] * len(targets)


def test_table_rounds_once_and_json_keeps_two_decimals(bench, tmp_path, monkeypatch):
    import seggpt.eval.registry
    import seggpt.predictor

    # 64.149 rounded to 2 decimals is 64.15, which a second rounding would print as 64.2.
    measured = {64: (36.80, 64.149), 96: (39.51, 65.46)}

    def evaluate(name, predictor, data, options, progress):
        miou, fb = measured[predictor.config.grid_size[1] * 8]  # the side, from the 8-pixel grid
        return SimpleNamespace(metrics={"mIoU": miou, "FB-IoU": fb}, details={"class_iou": {"shape=heart": 50.774}})

    monkeypatch.setattr(seggpt.predictor, "SegGPTPredictor", _Predictor)
    monkeypatch.setattr(seggpt.eval.registry, "evaluate", evaluate)
    out = tmp_path / "sizes.json"
    assert bench.main(["--sizes", "64", "96", "--episodes", "2", "--json", str(out)]) == 0

    rows = json.loads(out.read_text())["rows"]
    assert [r["image_size"] for r in rows] == [64, 96]
    assert rows[0]["FB-IoU"] == 64.15 and rows[0]["class_iou"] == {"shape=heart": 50.77}
    assert rows[1]["tokens_per_canvas"] == 288
    table = (tmp_path / "sizes.md").read_text()
    first = next(line for line in table.splitlines() if line.startswith("| 64 |"))
    assert first.split(" | ")[2:4] == ["36.8", "64.1"]
    assert "`python benchmarks/image_size.py --sizes 64 96 --episodes 2 --json" in table
