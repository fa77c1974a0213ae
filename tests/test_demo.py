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


def test_demo_with_real_data_segments_the_validation_photographs(tmp_path, capsys):
    """--data adds the real-photo tasks, read in place from a folder in ../shared/data's layout (written here)."""
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for t in range(45):
        f = data / "davis2016" / "JPEGImages" / "480p" / "blackswan" / f"{t:05d}.jpg"
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(f)
        ann = np.zeros((48, 64), np.uint8)
        ann[10:30, 5 + t // 3 : 25 + t // 3] = 1
        a = data / "davis2016" / "Annotations" / "480p" / "blackswan" / f"{t:05d}.png"
        a.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ann).save(a)
    for split in ("train", "val"):
        for k in range(2):
            (data / "camvid" / split).mkdir(parents=True, exist_ok=True)
            (data / "camvid" / f"{split}annot").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)).save(
                data / "camvid" / split / f"{k}.png"
            )
            Image.fromarray(rng.integers(0, 12, (36, 48), dtype=np.uint8)).save(
                data / "camvid" / f"{split}annot" / f"{k}.png"
            )
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--data", str(data)]) == 0
    assert sorted(p.name for p in (out / "davis_blackswan").glob("*_overlay.jpg")) == [
        "00020_overlay.jpg",
        "00044_overlay.jpg",
    ]
    assert read_mask(out / "davis_blackswan" / "00020.png").shape == (48, 64)
    assert len(list((out / "camvid_street").glob("*_overlay.jpg"))) == 2
    assert "davis_blackswan" in capsys.readouterr().out
    assert main(["demo", "--out", str(out), "--data", str(tmp_path / "nowhere")]) != 0


def test_the_demo_photographs_come_from_the_validation_parts():
    from pathlib import Path

    from seggpt.cli.demo import KVASIR_DEMO

    root = Path(__file__).resolve().parents[1] / "configs" / "splits"
    assert set(KVASIR_DEMO) <= set((root / "kvasir_val.txt").read_text().split())
    assert "blackswan" in (root / "davis2016_val.txt").read_text().split()
