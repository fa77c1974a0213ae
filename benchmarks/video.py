"""Video object segmentation on SynthContext videos: DAVIS J&F by context size K, and frames/s (fp32, bf16).

Each video comes from ``seggpt.data.synth.sample_video`` on the held-out ``eval`` split (shapes and textures
never drawn in training): 1..``--objects`` objects that move, turn, scale, occlude one another, and one that
leaves the frame and comes back. The first frame's true label map is the annotation; the rest is propagated
with ``SegGPTVideoPredictor`` (context = the annotated frame + the last K predicted frames, feature ensemble).
Scoring follows DAVIS-2017 (``seggpt.eval.metrics``): frames 1..T-2, per object J (IoU) and F (boundary
F-measure), averaged per object then over objects; J&F = mean of J and F. Frames/s counts propagation only
(model, resizing, decoding), not scoring.

    python benchmarks/video.py --weights src/seggpt/weights/seggpt_small.safetensors   # or omit: embedded
    python benchmarks/video.py --random vit_small                                      # prove the script

The paper's Table 4b (DAVIS-17, ViT-L) is printed beside the results for orientation only: different model
size, data and resolution, so the numbers are not comparable; the trend over K is what to look at.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

# The paper's Table 4b: J&F on DAVIS-17 by number of frames in the feature ensemble.
PAPER_BY_CONTEXT = {1: 70.0, 4: 74.7, 8: 75.6, 12: 74.8, 16: 74.6}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def make_videos(n: int, size: int, frames: int, max_objects: int, seed: int) -> list:
    from seggpt.data.synth import sample_video

    videos = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        num_objects = int(rng.integers(1, max_objects + 1))
        videos.append(sample_video(rng, size, frames, num_objects, split="eval"))
    return videos


def score_video(name: str, pred: np.ndarray, gt: np.ndarray, object_ids: list[int]) -> list:
    """DAVIS scoring of one video: frames 1..T-2, every object of the first frame."""
    from seggpt.eval.metrics import ObjectScores, davis_f, davis_j

    scores = []
    for o in object_ids:
        j = [davis_j(pred[t] == o, gt[t] == o) for t in range(1, len(gt) - 1)]
        f = [davis_f(pred[t] == o, gt[t] == o) for t in range(1, len(gt) - 1)]
        scores.append(ObjectScores(name, o, tuple(j), tuple(f)))
    return scores


def run_setting(model, videos: list, context: int, dtype: str, device: str) -> dict:
    """Propagate every video with context K in ``dtype`` ("fp32", "bf16"); J&F and frames/s."""
    from seggpt.eval.metrics import davis_summary
    from seggpt.predictor import SegGPTPredictor
    from seggpt.video import SegGPTVideoPredictor

    predictor = SegGPTPredictor(model, device=device, dtype=DTYPES[dtype])
    vp = SegGPTVideoPredictor(predictor=predictor, context=context)
    # Warm-up (first-call allocations and kernel selection), untimed: otherwise the first setting looks slower.
    frames = videos[0].frames[:3]
    square = np.zeros(frames.shape[1:3], np.int64)
    square[: frames.shape[1] // 4, : frames.shape[2] // 4] = 1
    for _ in vp.propagate(frames, first_masks=square):
        pass
    objects, seconds, frames_done = [], 0.0, 0
    for i, video in enumerate(videos):
        gt = video.labels.astype(np.int64)
        first = gt[0]
        ids = [int(o) for o in np.unique(first) if o != 0]
        if not ids:
            continue  # every object hidden on frame 0 (rare): nothing to annotate, as DAVIS never has
        start = time.perf_counter()
        pred = np.stack([labels for _, labels in vp.propagate(video.frames, first_masks=first)])
        seconds += time.perf_counter() - start
        frames_done += len(pred) - 1  # frame 0 is the annotation, not a prediction
        objects += score_video(f"video{i:03d}", pred, gt, ids)
    summary = davis_summary(objects)
    return {
        "context": context,
        "dtype": dtype,
        "J&F": 100 * summary["J&F-Mean"],
        "J": 100 * summary["J-Mean"],
        "F": 100 * summary["F-Mean"],
        "J-Recall": 100 * summary["J-Recall"],
        "J-Decay": 100 * summary["J-Decay"],
        "objects": len(objects),
        "frames": frames_done,
        "seconds": seconds,
        "fps": frames_done / max(seconds, 1e-9),
    }


def baselines(videos: list) -> dict:
    """J&F without a model: the first mask repeated on every frame (never follows motion), and nothing predicted
    (scores only the frames where an object is out of sight or fully occluded). A model must beat both."""
    from seggpt.eval.metrics import davis_summary

    out = {}
    for name, guess in (
        ("first mask repeated", lambda gt: np.broadcast_to(gt[0], gt.shape)),
        ("nothing predicted", np.zeros_like),
    ):
        objects = []
        for i, video in enumerate(videos):
            gt = video.labels.astype(np.int64)
            ids = [int(o) for o in np.unique(gt[0]) if o != 0]
            if ids:
                objects += score_video(f"video{i:03d}", guess(gt), gt, ids)
        s = davis_summary(objects)
        out[name] = {"J&F": 100 * s["J&F-Mean"], "J": 100 * s["J-Mean"], "F": 100 * s["F-Mean"]}
    return out


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--override expects KEY=VALUE, got {item!r}")
        out[key] = json.loads(value)
    return out


def build_model(args: argparse.Namespace):
    from seggpt import SegGPT, load_model
    from seggpt.config import preset

    if args.random:
        torch.manual_seed(args.seed)
        return SegGPT(preset(args.random, **parse_overrides(args.override))).eval(), f"random {args.random}"
    model = load_model(args.weights, image_size=args.image_size)
    return model, f"{args.weights or 'embedded seggpt_small'} at {model.config.image_size[1]} px"


def table(rows: list[dict], weights: str, baseline: dict) -> str:
    lines = [
        f"weights: {weights}",
        "",
        "| K (recent frames) | dtype | J&F | J | F | frames/s | paper J&F (DAVIS-17, ViT-L) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = PAPER_BY_CONTEXT.get(r["context"])
        lines.append(
            f"| {r['context']} | {r['dtype']} | {r['J&F']:.1f} | {r['J']:.1f} | {r['F']:.1f} | {r['fps']:.2f} | "
            f"{'' if paper is None else f'{paper:.1f}'} |"
        )
    for name, b in baseline.items():
        lines.append(f"| {name} (no model) | - | {b['J&F']:.1f} | {b['J']:.1f} | {b['F']:.1f} | - | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", default=None, help="checkpoint (any format); default: the embedded model")
    src.add_argument("--random", default=None, metavar="PRESET", help="random weights of a preset (script check)")
    p.add_argument("--image-size", type=int, default=None, help="run the model at this side (default: its own)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="config override (--random)")
    p.add_argument("--videos", type=int, default=8, help="number of SynthContext videos")
    p.add_argument("--frames", type=int, default=24, help="frames per video (K = 16 needs more than 17)")
    p.add_argument("--objects", type=int, default=3, help="at most this many objects per video (1..N drawn)")
    p.add_argument("--size", type=int, default=128, help="frame side in pixels")
    p.add_argument("--contexts", type=int, nargs="+", default=[1, 4, 8, 16], help="values of K (fp32)")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    p.add_argument("--dtype-context", type=int, default=8, help="K for the dtypes other than fp32")
    p.add_argument("--device", default="cpu")
    # One thread by default: on a shared, oversubscribed CPU two OpenMP threads wait on each other and run several
    # times slower than one. On an idle machine pass --threads 2 (or more).
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see the comment)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    model, weights = build_model(args)
    videos = make_videos(args.videos, args.size, args.frames, args.objects, args.seed)
    settings = [("fp32", k) for k in args.contexts] if "fp32" in args.dtypes else []
    settings += [(d, args.dtype_context) for d in args.dtypes if d != "fp32"]
    rows = []
    for dtype, k in settings:
        # The predictor casts a model it is given in place: lower precisions get a copy, fp32 keeps its weights.
        row = run_setting(model if dtype == "fp32" else copy.deepcopy(model), videos, k, dtype, args.device)
        rows.append(row)
        print(
            f"K={k:<3d} {dtype}: J&F {row['J&F']:.1f} (J {row['J']:.1f}, F {row['F']:.1f}), "
            f"{row['fps']:.2f} frames/s over {row['frames']} frames",
            file=sys.stderr,
            flush=True,
        )
    baseline = baselines(videos)
    report = table(rows, weights, baseline)
    print(
        f"\n{args.videos} SynthContext eval videos, {args.frames} frames of {args.size}x{args.size}, "
        f"1..{args.objects} objects, seed {args.seed}, {args.threads} threads\n"
    )
    print(report)
    if args.json:
        from seggpt.io import atomic_write

        text = json.dumps({"weights": weights, "args": vars(args), "rows": rows, "baseline": baseline}, indent=2)
        atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(text), overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
