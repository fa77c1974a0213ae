"""Where a model stands on SynthContext, attribute by attribute, seen categories beside held-out ones.

    python projects/synthcontext/scripts/synth_by_attribute.py [--weights CKPT] [--episodes 300]
        [--split train|eval] [--threads 1]

One-shot episodes (an example scene and a query scene of one category), as ``seggpt eval synthcontext`` draws
them but over any split: ``train`` takes categories the model was trained on, including colours (the held-out
split has none), ``eval`` the held-out shapes and textures. Prints foreground IoU per category and where the
predicted pixels fall: on the category, on other objects (distractors), on the background.

Two more columns split the error into *which objects* and *how well outlined*:

- **objects snapped**: the IoU once the prediction is snapped to whole objects (an object is marked when more than
  half of its visible pixels are), so outlines are perfect and only the choice of objects counts;
- **AUC**: in queries that hold both, the chance that an object of the category gets a higher mean score (the
  painted colour nearer the foreground's than the background's) than a distractor. 0.5 is no selection at all,
  1.0 a threshold that picks exactly the category's objects.

``--contrast`` draws contrast episodes instead (:func:`seggpt.data.synth.contrast_scenes`): the example's category
object shares a look (its colour, texture or shape) with unmarked foils beside it, and *lookalikes* in the query
copy that look without the category; half the query's category objects share it too. Copying the example's look
and avoiding it both fail there. The report adds how much of the lookalikes' area is painted.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from seggpt.checkpoint import load_model
from seggpt.data import synth
from seggpt.eval.episodes import _binary
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
    ap.add_argument("--contrast", action="store_true", help="contrast episodes (see above) instead of the benchmark's")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cats = SEEN if args.split == "train" else list(HELD_OUT)
    predictor = SegGPTPredictor(load_model(args.weights, image_size=args.image_size))
    counts = np.zeros((2, 2, len(cats)))  # (raw, snapped) x (intersection, union) per category
    aucs: list[list[float]] = [[] for _ in cats]
    where = np.zeros(4)  # predicted pixels on the category, on other objects, on background; category pixels
    lookalikes = np.zeros(2)  # predicted pixels on lookalikes; lookalike pixels (contrast episodes)
    for i in range(args.episodes):
        c = i % len(cats)
        attribute, value = cats[c]
        if args.contrast:
            q_img, q_mask, q_inst, s_img, s_mask, look = contrast_episode(args, i, attribute, value)
        else:
            q_img, q_mask, _, _, q_inst = episode_scene(args.seed, i, 0, attribute, value, args.size, split=args.split)
            s_img, s_mask, _, _, _ = episode_scene(args.seed, i, 1, attribute, value, args.size, split=args.split)
        predictor.set_prompts([s_img], [_binary(s_mask)], task="semantic", num_labels=1)
        (pred,) = predictor.predict_batch([q_img], batch_size=1)
        p, g = np.asarray(pred.labels) != 0, q_mask.astype(bool)
        score = foreground_score(pred.raw, pred.palette, g.shape)
        snapped = np.zeros_like(p)
        pos, neg = [], []
        for j in np.unique(q_inst)[1:]:
            obj = q_inst == j
            snapped |= obj & (p[obj].mean() > 0.5)
            (pos if g[obj].mean() > 0.5 else neg).append(score[obj].mean())
        if pos and neg:
            aucs[c].append(np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg]))
        for k, mine in enumerate((p, snapped)):
            counts[k, :, c] += [(mine & g).sum(), (mine | g).sum()]
        where += [(p & g).sum(), (p & (q_inst > 0) & ~g).sum(), (p & (q_inst == 0)).sum(), g.sum()]
        if args.contrast:
            lookalikes += [(p & look).sum(), look.sum()]
    iou, snap = 100 * counts[:, 0] / np.maximum(counts[:, 1], 1)
    auc = [float(np.mean(a)) if a else float("nan") for a in aucs]
    kind = "contrast" if args.contrast else "one-shot"
    print(
        f"{args.split} split, {args.episodes} {kind} episodes, seed {args.seed}: mIoU {iou.mean():.1f}, "
        f"objects snapped {snap.mean():.1f}, AUC {np.nanmean(auc):.2f}"
    )
    print("| category | IoU | objects snapped | AUC |\n|---|---:|---:|---:|")
    for (a, v), x, s, u in zip(cats, iou, snap, auc, strict=True):
        print(f"| {a}={v} | {x:.1f} | {s:.1f} | {u:.2f} |")
    on_cat, on_other, on_bg = 100 * where[:3] / where[3]
    print(
        f"predicted pixels, as % of the category's pixels: {on_cat:.0f} on the category, {on_other:.0f} on other "
        f"objects, {on_bg:.0f} on the background"
    )
    if args.contrast:
        print(f"painted on the lookalikes, as % of their pixels: {100 * lookalikes[0] / max(lookalikes[1], 1):.0f}")


def contrast_episode(args: argparse.Namespace, index: int, attribute: str, value: str) -> tuple:
    """Query image, mask and instance labels, example image and mask, and the query's lookalikes (pixels of
    distractors that share the confound with the example's category object)."""
    rng = np.random.default_rng([args.seed, index, 7])
    vocab = synth.vocabulary(args.split)
    example, query, confound = synth.render_contrast(rng, (args.size, args.size), vocab, attribute, value)
    (s_img, s_inst, sa, ca), (q_img, q_inst, sb, cb) = example, query
    s_mask, q_mask = synth.class_map(s_inst, ca), synth.class_map(q_inst, cb)
    look = sa.objects[ca.index(1)].attribute(confound)
    ids = [j + 1 for j, o in enumerate(sb.objects) if cb[j] == 0 and o.attribute(confound) == look]
    return q_img, q_mask, q_inst, s_img, s_mask, np.isin(q_inst, ids)


def foreground_score(raw: np.ndarray, palette: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """How much nearer the painted colour is to the foreground's than to the background's, at ``size``."""
    pal = palette.astype(np.float32)
    s = np.linalg.norm(raw - pal[0], axis=-1) - np.linalg.norm(raw - pal[1], axis=-1)
    s = torch.nn.functional.interpolate(torch.from_numpy(s)[None, None], size=size, mode="bilinear")
    return s[0, 0].numpy()


if __name__ == "__main__":
    main()
