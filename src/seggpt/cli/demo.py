"""``seggpt demo``: the main job on the embedded model, with the examples bundled in the package.

For every bundled task it sets the examples once, segments the targets, writes label maps, colour masks and
overlays, scores each answer against the bundled ground truth, and composes one summary picture.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from seggpt.cli.options import add_device, add_image_size, device_and_dtype

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "demo"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="segment the bundled examples with the embedded model",
        description="Segment the bundled example targets from the bundled examples (synthetic and real "
        "photographs) and write label maps, overlays and a summary picture.",
    )
    p.add_argument("--out", default="demo_out", help="output folder, used only by the demo (default: demo_out)")
    p.add_argument(
        "--weights",
        default=None,
        help="checkpoint to use instead of the embedded model: a path or a Hugging Face hub id (BAAI/SegGPT, ...)",
    )
    add_image_size(p)
    add_device(p)
    p.set_defaults(func=run)


def mean_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the foreground labels present in either map of their IoU (1.0 when both are empty)."""
    labels = sorted((set(np.unique(pred)) | set(np.unique(truth))) - {0})
    if not labels:
        return 1.0
    ious = [np.logical_and(pred == k, truth == k).sum() / np.logical_or(pred == k, truth == k).sum() for k in labels]
    return float(np.mean(ious))


def _tile(images: list[np.ndarray], height: int = 160) -> np.ndarray:
    from PIL import Image

    resized = []
    for im in images:
        h, w = im.shape[:2]
        resized.append(np.asarray(Image.fromarray(im).resize((max(1, round(w * height / h)), height), Image.NEAREST)))
    gap = np.full((height, 6, 3), 255, np.uint8)
    row = [resized[0]]
    for im in resized[1:]:
        row += [gap, im]
    return np.concatenate(row, axis=1)


def run(args: argparse.Namespace) -> int:
    from seggpt.checkpoint import EMBEDDED_WEIGHTS
    from seggpt.coloring import build_palette, paint
    from seggpt.io import read_image, read_mask, save_rgb
    from seggpt.predictor import SegGPTPredictor

    device, dtype = device_and_dtype(args)
    if args.weights is None and not EMBEDDED_WEIGHTS.is_file():
        print("no embedded model yet: this build ships without default weights; pass --weights CHECKPOINT.")
        return 0
    manifest = json.loads((ASSETS / "manifest.json").read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    predictor = SegGPTPredictor(args.weights, device=device, dtype=dtype, image_size=args.image_size)
    print(f"model: {args.weights or EMBEDDED_WEIGHTS.name} (loaded in {time.perf_counter() - t0:.1f} s)")
    rows, scores = [], []
    for task in manifest["tasks"]:
        examples = task["examples"]
        predictor.set_prompts(
            [ASSETS / e["image"] for e in examples], [ASSETS / e["mask"] for e in examples], task=task["task"]
        )
        folder = out / task["name"]
        # The summary shows the first example beside every target: read it once per task.
        ex_img = read_image(ASSETS / examples[0]["image"])
        ex_labels = read_mask(ASSETS / examples[0]["mask"])
        for i, target in enumerate(task["targets"], start=1):
            image_path = ASSETS / target["image"]
            pred = predictor.predict(image_path)
            stem = folder / Path(target["image"]).stem
            pred.save_labels(stem.with_suffix(".png"), overwrite=True)
            pred.save_color(stem.parent / f"{stem.name}_color.png", overwrite=True)
            pred.save_overlay(stem.parent / f"{stem.name}_overlay.jpg", image_path, overwrite=True)
            truth = read_mask(ASSETS / target["mask"]) if target.get("mask") else None
            iou = mean_iou(pred.labels, truth) if truth is not None else float("nan")
            scores.append(iou)
            print(f"  {task['name']:<18} target {i}: mIoU {100 * iou:5.1f}  -> {stem}_overlay.jpg")
            palette = build_palette(max(int(ex_labels.max()), int(pred.labels.max()), 1))
            ex_mask = paint(np.clip(ex_labels, 0, len(palette) - 1), palette)
            tiles = [ex_img, ex_mask, read_image(image_path), pred.overlay(image_path)]
            if truth is not None:
                tiles.append(paint(np.clip(truth, 0, len(palette) - 1), palette))
            rows.append(_tile(tiles))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    summary = save_rgb(np.concatenate(rows), out / "summary.png", overwrite=True)
    print(f"mean mIoU over {len(scores)} targets: {100 * np.nanmean(scores):.1f}")
    print(f"wrote label maps, colour masks and overlays under {out}/, and {summary}")
    print("summary columns: example | its mask | target | prediction overlay | ground truth")
    return 0
