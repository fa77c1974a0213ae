"""`seggpt demo` on the embedded model: every bundled target gets its outputs, scores and a summary picture."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from seggpt.cli import main
from seggpt.cli.demo import ASSETS, mean_iou
from seggpt.io import read_mask


def test_mean_iou_by_hand():
    truth = np.array([[0, 1, 1], [0, 2, 2]])
    pred = np.array([[0, 1, 0], [0, 2, 2]])
    assert mean_iou(pred, truth) == (1 / 2 + 1) / 2
    assert mean_iou(np.zeros((2, 2), int), np.zeros((2, 2), int)) == 1.0


def test_demo_writes_every_target_and_can_run_again(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    manifest = json.loads((ASSETS / "manifest.json").read_text())
    for task in manifest["tasks"]:
        for target in task["targets"]:
            stem = target["image"].removesuffix(".png")
            labels = read_mask(out / task["name"] / f"{stem}.png")
            size = Image.open(ASSETS / target["image"]).size
            assert labels.shape == (size[1], size[0])  # the target's own size
            assert (out / task["name"] / f"{stem}_overlay.jpg").is_file()
    assert Image.open(out / "summary.png").size[0] > 0
    printed = capsys.readouterr().out
    assert "mean mIoU over" in printed and str(out) in printed
    assert main(["demo", "--out", str(out)]) == 0  # its own outputs are replaced, not an error
