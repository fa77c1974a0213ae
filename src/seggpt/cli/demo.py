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

from seggpt.cli.options import add_device, add_image_size, add_threshold, device_and_dtype

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "demo"
# The first three images of Kvasir-SEG's validation part (configs/splits/kvasir_val.txt; a test checks): an example
# and two targets that training never read.
KVASIR_DEMO = ("cju0qoxqj9q6s0835b43399p4", "cju0u2g7pmnux0801vkk47ivj", "cju15l5ubz9yh0855b3ivdpse")


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
    p.add_argument(
        "--data",
        default=None,
        help="also segment real photographs from the validation parts of the data sets in this folder (the layout "
        "of ../shared/data: davis2016/, kvasir-seg/, camvid/), read where they are; `make demo` passes it when the "
        "folder exists",
    )
    add_image_size(p, aspect=True)
    add_threshold(p)
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


def real_tasks(data: Path) -> list[dict]:
    """Tasks on photographs the embedded model never trained on (``configs/splits/*_val.txt``, CamVid val), read in
    place: a DAVIS video (frame 0 and its mask -> later frames), a polyp (Kvasir-SEG), a street scene (CamVid: every
    class from one training image). Sets that are missing are left out."""
    from seggpt.data.readers.base import read_index_png

    tasks = []
    davis = data / "davis2016"
    if (davis / "JPEGImages" / "480p" / "blackswan").is_dir():
        frames = sorted((davis / "JPEGImages" / "480p" / "blackswan").glob("*.jpg"))
        ann = lambda f: read_index_png(davis / "Annotations" / "480p" / "blackswan" / f"{f.stem}.png")  # noqa: E731
        tasks.append(
            {
                "name": "davis_blackswan",
                "task": "instance",
                "examples": [(frames[0], ann(frames[0]))],
                "targets": [(f, ann(f)) for f in frames[20:45:24]],
            }
        )
    kvasir = data / "kvasir-seg"
    if (kvasir / "images").is_dir():
        pair = lambda s: (kvasir / "images" / f"{s}.jpg", read_index_png(kvasir / "masks" / f"{s}.png"))  # noqa: E731
        example, *targets = KVASIR_DEMO
        tasks.append(
            {
                "name": "kvasir_polyp",
                "task": "semantic",
                "examples": [pair(example)],
                "targets": [pair(s) for s in targets],
            }
        )
    camvid = data / "camvid"
    if (camvid / "val").is_dir():
        lab = lambda p: np.where(read_index_png(p) == 11, 0, read_index_png(p) + 1)  # noqa: E731 -- void -> 0
        ex = sorted((camvid / "train").glob("*"))[0]
        targets = sorted((camvid / "val").glob("*"))[:2]
        tasks.append(
            {
                "name": "camvid_street",
                "task": "semantic",
                "examples": [(ex, lab(camvid / "trainannot" / f"{ex.stem}.png"))],
                "targets": [(t, lab(camvid / "valannot" / f"{t.stem}.png")) for t in targets],
            }
        )
    return tasks


def bundled_tasks() -> list[dict]:
    """The tasks of the bundled assets (manifest.json), as (image, mask) paths."""
    manifest = json.loads((ASSETS / "manifest.json").read_text())
    return [
        {
            "name": t["name"],
            "task": t["task"],
            "examples": [(ASSETS / e["image"], ASSETS / e["mask"]) for e in t["examples"]],
            "targets": [(ASSETS / g["image"], ASSETS / g["mask"] if g.get("mask") else None) for g in t["targets"]],
        }
        for t in manifest["tasks"]
    ]


def run(args: argparse.Namespace) -> int:
    from seggpt.checkpoint import EMBEDDED_WEIGHTS
    from seggpt.coloring import build_palette, paint
    from seggpt.io import read_image, read_mask, save_rgb
    from seggpt.predictor import SegGPTPredictor

    device, dtype = device_and_dtype(args)
    if args.weights is None and not EMBEDDED_WEIGHTS.is_file():
        print("no embedded model yet: this build ships without default weights; pass --weights CHECKPOINT.")
        return 0
    tasks = bundled_tasks()
    if args.data is not None:
        if not Path(args.data).is_dir():
            raise FileNotFoundError(f"--data {args.data}: no such folder")
        tasks += real_tasks(Path(args.data))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    predictor = SegGPTPredictor(
        args.weights,
        device=device,
        dtype=dtype,
        image_size=args.image_size,
        threshold=args.threshold,
        keep_aspect=args.keep_aspect,
    )
    print(f"model: {args.weights or EMBEDDED_WEIGHTS.name} (loaded in {time.perf_counter() - t0:.1f} s)")
    rows, scores = [], []
    as_labels = lambda m: m if isinstance(m, np.ndarray) else read_mask(m)  # noqa: E731
    for task in tasks:
        examples = task["examples"]
        predictor.set_prompts([e for e, _ in examples], [m for _, m in examples], task=task["task"])
        folder = out / task["name"]
        # The summary shows the first example beside every target: read it once per task.
        ex_img = read_image(examples[0][0])
        ex_labels = as_labels(examples[0][1])
        for i, (image_path, truth_src) in enumerate(task["targets"], start=1):
            pred = predictor.predict(image_path)
            stem = folder / Path(image_path).stem
            pred.save_labels(stem.with_suffix(".png"), overwrite=True)
            pred.save_color(stem.parent / f"{stem.name}_color.png", overwrite=True)
            pred.save_overlay(stem.parent / f"{stem.name}_overlay.jpg", image_path, overwrite=True)
            truth = as_labels(truth_src) if truth_src is not None else None
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
