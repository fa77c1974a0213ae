"""Where a model stands on SynthContext, attribute by attribute, seen categories beside held-out ones.

    python scripts/synth_by_attribute.py [--weights CKPT] [--episodes 300] [--split train|eval] [--threads 1]

One-shot episodes (an example scene and a query scene of one category), as ``seggpt eval synthcontext`` draws
them but over any split: ``train`` takes categories the model was trained on, including colours (the held-out
split has none), ``eval`` the held-out shapes and textures. Prints foreground IoU per category and where the
predicted pixels fall: on the category, on other objects (distractors), on the background.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from seggpt.checkpoint import load_model
from seggpt.eval.episodes import predict_binary
from seggpt.eval.synthcontext import CATEGORIES as HELD_OUT
from seggpt.eval.synthcontext import episode_scene
from seggpt.predictor import SegGPTPredictor

SEEN = [("shape", s) for s in ("circle", "triangle", "star5", "cross")]
SEEN += [("texture", t) for t in ("stripes", "checker")]
SEEN += [("colour", c) for c in ("red", "blue", "green", "yellow")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="checkpoint (default: the embedded model)")
    ap.add_argument("--image-size", type=int, default=None, help="run the model at this side (default: its own)")
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--split", choices=["train", "eval"], default="train")
    ap.add_argument("--size", type=int, default=128, help="scene side in pixels (the benchmark's: 128)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cats = SEEN if args.split == "train" else list(HELD_OUT)
    predictor = SegGPTPredictor(load_model(args.weights, image_size=args.image_size))
    inter, union = np.zeros(len(cats)), np.zeros(len(cats))
    where = np.zeros(4)  # predicted pixels on the category, on other objects, on background; category pixels
    for i in range(args.episodes):
        c = i % len(cats)
        attribute, value = cats[c]

        q_img, q_mask, _, _, q_inst = episode_scene(args.seed, i, 0, attribute, value, args.size, split=args.split)
        s_img, s_mask, _, _, _ = episode_scene(args.seed, i, 1, attribute, value, args.size, split=args.split)
        (pred,) = predict_binary(predictor, [s_img], [s_mask], [q_img], ensemble="feature", batch_size=1)
        p, g = pred.astype(bool), q_mask.astype(bool)
        inter[c] += (p & g).sum()
        union[c] += (p | g).sum()
        where += [(p & g).sum(), (p & (q_inst > 0) & ~g).sum(), (p & (q_inst == 0)).sum(), g.sum()]
    iou = 100 * inter / np.maximum(union, 1)
    print(f"{args.split} split, {args.episodes} one-shot episodes, seed {args.seed}: mIoU {iou.mean():.1f}")
    print("| category | IoU |\n|---|---:|")
    for (a, v), x in zip(cats, iou, strict=True):
        print(f"| {a}={v} | {x:.1f} |")
    on_cat, on_other, on_bg = 100 * where[:3] / where[3]
    print(
        f"predicted pixels, as % of the category's pixels: {on_cat:.0f} on the category, {on_other:.0f} on other "
        f"objects, {on_bg:.0f} on the background"
    )


if __name__ == "__main__":
    main()
