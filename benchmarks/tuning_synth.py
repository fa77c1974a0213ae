"""In-context tuning against example ensembles on held-out SynthContext categories (the paper's Table S1).

For every held-out category (shapes and textures never drawn in training) the script draws a training pool and a
test set of SynthContext images that show it, then segments the test set three ways:

    1 example      one training image as the prompt (best and mean over seeds, as Table S1 reports the best)
    16 examples    16 training images in a feature ensemble
    tuned          a prompt learned on the training pool with the model frozen, initialised from the seed-1000
                   single example (and optionally from noise)

and reports foreground IoU accumulated over the test set per category, and their mean (mIoU), the FSS protocol,
with a paired bootstrap interval (test images resampled per category) for the tuned prompt's gap to each ensemble.

    python benchmarks/tuning_synth.py --weights src/seggpt/weights/seggpt_small.safetensors --out tuning.json

Everything is seeded: the same command gives the same numbers on the same machine. Cost per category with the
defaults, in single-canvas forwards: about 1200 for tuning (100 steps x 4 queries, forward + backward), 1536 for the
16-example ensemble (4 seeds x 24 queries x 16 examples), 120 for the rest; six categories make ~17 k forwards of
the model (seconds on a GPU; about 4 minutes for vit_small on two free CPU cores). ``--seeds 1000`` quarters the
ensemble part.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from seggpt.checkpoint import load_model
from seggpt.coloring import build_palette
from seggpt.data import synth
from seggpt.eval.report import markdown_path
from seggpt.io import atomic_write
from seggpt.transforms import normalize
from seggpt.tuning import TuneConfig, iou_counts, segment_tensors, tune

log = logging.getLogger("tuning_synth")


# Training categories for choosing tuning settings (--split train) without looking at the held-out ones.
VALIDATION_CATEGORIES = [("shape", "star5"), ("shape", "chevron"), ("texture", "stripes"), ("texture", "checker")]


def held_out_categories() -> list[tuple[str, str]]:
    vocab = synth.vocabulary("eval")
    return [(attr, v) for attr, values in vocab.category_values.items() for v in values]


def draw_images(
    attribute: str, value: str, n: int, size: tuple[int, int], seed: int, split: str = "eval"
) -> tuple[torch.Tensor, torch.Tensor]:
    """n images showing the category with their binary masks: (n, 3, h, w) uint8, (n, h, w) int64."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    while len(images) < n:
        ep = synth.sample_semantic(rng, size, k_shots=1, split=split, attribute=attribute, value=value)
        for img, m in ((ep.images[0], ep.masks[0]), (ep.query_image, ep.query_mask)):
            images.append(torch.from_numpy(np.array(img)).permute(2, 0, 1))
            masks.append(torch.from_numpy(np.array(m).astype(np.int64)))
    return torch.stack(images[:n]), torch.stack(masks[:n])


def example_picks(seed: int, category: int, pool: int, k: int) -> list[int]:
    """The k training images (of ``pool``) that seed ``seed`` draws as examples for category number ``category``."""
    return [int(i) for i in np.random.default_rng(seed + category).choice(pool, k, replace=False)]


class Pool:
    """Training images as the tuning loop reads them."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.masks[i]


def example_prompt(images: torch.Tensor, masks: torch.Tensor, picks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Real examples as prompt tensors (P, 3, h, w), normalised; masks painted white on black."""
    palette = torch.from_numpy(build_palette(1)).float()
    painted = palette[masks[picks].clamp(0, 1)].permute(0, 3, 1, 2)
    return normalize(images[picks].float()), normalize(painted)


def fg_counts(model, prompt_images, prompt_masks, test_images, test_masks, batch_size) -> list[list[int]]:
    """Foreground intersection and union of every test image: [[inter, union], ...]."""
    labels, _ = segment_tensors(model, prompt_images, prompt_masks, test_images.float(), 1, batch_size=batch_size)
    out = []
    for lab, mask in zip(labels, test_masks, strict=True):
        inter, union = iou_counts(lab, mask, 1)
        out.append([int(inter[1]), int(union[1])])
    return out


def miou(counts: dict[str, list[np.ndarray]], idx: list[np.ndarray] | None = None) -> tuple[float, float]:
    """(best seed, mean over seeds) mIoU of one method from per-category lists of (seeds, images, 2) counts, on the
    test images ``idx[c]`` of each category (all when None). IoU is accumulated over a category's images."""
    per_cat = []
    for c, a in enumerate(counts.values()):
        a = a if idx is None else a[:, idx[c]]
        tot = a.sum(1)  # seeds x 2
        per_cat.append(tot[:, 0] / np.maximum(tot[:, 1], 1))
    ious = np.stack(per_cat) * 100  # categories x seeds
    return float(ious.mean(0).max()), float(ious.mean())


def bootstrap_gaps(rows: dict, a: str, b: str, n: int = 2000, seed: int = 0) -> dict[str, list[float]]:
    """95% intervals of mIoU(a) - mIoU(b), best seed and mean over seeds, resampling each category's test images
    (the same draw for both methods, so the comparison is paired)."""
    rng = np.random.default_rng(seed)
    ca = {c: np.asarray(r[f"{a}-images"]) for c, r in rows.items()}
    cb = {c: np.asarray(r[f"{b}-images"]) for c, r in rows.items()}
    sizes = [v.shape[1] for v in ca.values()]
    gaps = []
    for _ in range(n):
        idx = [rng.integers(0, m, m) for m in sizes]
        ga, gb = miou(ca, idx), miou(cb, idx)
        gaps.append((ga[0] - gb[0], ga[1] - gb[1]))
    g = np.array(gaps)
    return {
        "best_seed": [float(np.percentile(g[:, 0], 2.5)), float(np.percentile(g[:, 0], 97.5))],
        "mean": [float(np.percentile(g[:, 1], 2.5)), float(np.percentile(g[:, 1], 97.5))],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="checkpoint (default: the embedded model)")
    ap.add_argument("--image-size", type=int, default=None, help="run the model at this side (default: its own)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train", type=int, default=32, help="training images per category (default 32)")
    ap.add_argument("--test", type=int, default=24, help="test images per category (default 24)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 2000, 3000, 4000], help="example draws")
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 16], help="ensemble sizes to compare")
    ap.add_argument("--steps", type=int, default=100, help="tuning steps per category (default 100)")
    ap.add_argument("--batch-size", type=int, default=4, help="queries per tuning step and per forward")
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument(
        "--foreground-weight", type=float, default=1.0, help="tuning loss weight of the category's pixels (default 1)"
    )
    ap.add_argument(
        "--loss", choices=["canvas", "iou", "both"], default="canvas", help="tuning loss (see seggpt.tuning.TuneConfig)"
    )
    ap.add_argument("--iou-temperature", type=float, default=16.0, help="soft decoding temperature of the IoU loss")
    ap.add_argument("--val-fraction", type=float, default=0.0, help="hold-out share to choose the step on (default 0)")
    ap.add_argument("--val-every", type=int, default=25, help="steps between validations")
    ap.add_argument("--amp", action="store_true", help="tune in bfloat16 autocast")
    ap.add_argument("--learn", choices=["both", "image", "mask"], default="both", help="which half of the prompt")
    ap.add_argument(
        "--tune-prompts",
        type=int,
        default=1,
        help="examples in the tuned prompt, used as a feature ensemble (default 1)",
    )
    ap.add_argument("--noise", action="store_true", help="also tune from a noise initialisation")
    ap.add_argument(
        "--split",
        choices=["eval", "train"],
        default="eval",
        help="eval: the held-out categories (the result); train: training categories, to choose settings on",
    )
    ap.add_argument("--categories", nargs="+", default=None, help="attribute:value pairs (default: all of the split)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--save-prompts", default=None, help="folder to keep the tuned prompts in")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.weights, device=args.device, image_size=args.image_size)
    size = model.config.image_size
    cats = held_out_categories() if args.split == "eval" else VALIDATION_CATEGORIES
    if args.categories:
        cats = [tuple(c.split(":", 1)) for c in args.categories]
    bs = args.batch_size
    rows: dict[str, dict] = {}
    t0 = time.time()
    for ci, (attr, value) in enumerate(cats):
        name = f"{attr}:{value}"
        tr_img, tr_msk = draw_images(attr, value, args.train, size, seed=10_000 + ci, split=args.split)
        te_img, te_msk = draw_images(attr, value, args.test, size, seed=20_000 + ci, split=args.split)
        row: dict = {}
        # The tuned prompt starts from the first seed's draw of --tune-prompts examples (the k-shot draw for k = P).
        init_pick = example_picks(args.seeds[0], ci, args.train, args.tune_prompts)
        for k in args.shots:
            per_seed = []
            for s in args.seeds:
                picks = example_picks(s, ci, args.train, k)
                per_seed.append(fg_counts(model, *example_prompt(tr_img, tr_msk, picks), te_img, te_msk, bs))
            row[f"{k}-shot"] = [np.sum(c, 0).tolist() for c in per_seed]
            row[f"{k}-shot-images"] = per_seed
        inits = [("tuned", "example")] + ([("tuned-noise", "noise")] if args.noise else [])
        for key, init in inits:
            cfg = TuneConfig(
                steps=args.steps,
                batch_size=bs,
                lr=args.lr,
                init=init,
                seed=ci,
                checkpoint_every=0,
                num_prompts=args.tune_prompts,
                learn=args.learn,
                foreground_weight=args.foreground_weight,
                loss=args.loss,
                iou_temperature=args.iou_temperature,
                val_fraction=args.val_fraction,
                val_every=args.val_every,
                amp=args.amp,
            )
            t = time.time()
            (prompt,) = tune(model, Pool(tr_img, tr_msk), [1], config=cfg, init_examples=init_pick)
            counts = fg_counts(model, prompt.images, prompt.masks, te_img, te_msk, bs)
            row[key] = [np.sum(counts, 0).tolist()]
            row[f"{key}-images"] = [counts]
            row[f"{key}-seconds"] = round(time.time() - t, 1)
            if args.save_prompts:
                prompt.save(Path(args.save_prompts) / f"{attr}_{value}_{key}.safetensors", overwrite=True)
        rows[name] = row
        summary = {
            k: [round(i / max(u, 1) * 100, 1) for i, u in v]
            for k, v in row.items()
            if isinstance(v, list) and not k.endswith("-images")
        }
        log.info("%s (%.0f s so far): %s", name, time.time() - t0, summary)

    methods = [f"{k}-shot" for k in args.shots] + ["tuned"] + (["tuned-noise"] if args.noise else [])
    table = {}
    for m in methods:
        # IoU per category and seed; Table S1 reports the best seed, so report both the best and the mean.
        ious = np.array([[i / max(u, 1) for i, u in rows[c][m]] for c in rows]) * 100  # categories x seeds
        table[m] = {
            "mIoU_best_seed": float(ious.mean(0).max()),
            "mIoU_mean": float(ious.mean()),
            "per_category": {c: float(v) for c, v in zip(rows, ious.mean(1), strict=True)},
        }
    which = "held-out" if args.split == "eval" else "training (validation)"
    out: list[str] = []
    say = out.append
    say(f"{which} SynthContext categories: {len(rows)}, train {args.train}, test {args.test} images each")
    say(
        f"weights: {args.weights or 'embedded'}; tuning {args.steps} steps x batch {bs}, lr {args.lr}, "
        f"{args.loss} loss, foreground weight {args.foreground_weight}, {args.tune_prompts} example(s) tuned, "
        f"learning {args.learn}"
        f"{', bf16' if args.amp else ''}\n"
    )
    say("| prompt | mIoU (best seed) | mIoU (mean over seeds) |")
    say("|---|---|---|")
    for m in methods:
        say(f"| {m} | {table[m]['mIoU_best_seed']:.1f} | {table[m]['mIoU_mean']:.1f} |")
    say("\nper category (mean over seeds):")
    say("| category | " + " | ".join(methods) + " |")
    say("|---" * (len(methods) + 1) + "|")
    for c in rows:
        say(f"| {c} | " + " | ".join(f"{table[m]['per_category'][c]:.1f}" for m in methods) + " |")
    # How sure the tuned prompt's lead (or lag) is: paired bootstrap over the test images.
    gaps = {m: bootstrap_gaps(rows, "tuned", m) for m in methods if m.endswith("-shot")}
    say("\ntuned minus each ensemble, 95% paired bootstrap interval over test images (2000 draws):")
    say("| against | gap (best seed) | interval | gap (mean over seeds) | interval |")
    say("|---|---:|---|---:|---|")
    for m, g in gaps.items():
        best = table["tuned"]["mIoU_best_seed"] - table[m]["mIoU_best_seed"]
        mean = table["tuned"]["mIoU_mean"] - table[m]["mIoU_mean"]
        lo_b, hi_b = g["best_seed"]
        lo_m, hi_m = g["mean"]
        say(f"| {m} | {best:+.1f} | [{lo_b:+.1f}, {hi_b:+.1f}] | {mean:+.1f} | [{lo_m:+.1f}, {hi_m:+.1f}] |")
    print("\n" + "\n".join(out))
    if args.out:
        result = {
            "args": vars(args),
            "table": table,
            "gaps_95": gaps,
            "counts": rows,
            "seconds": round(time.time() - t0, 1),
        }
        text = json.dumps(result, indent=2) + "\n"
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text), overwrite=True)
        md = markdown_path(args.out)  # never the JSON itself, whatever its name
        command = " ".join(["python benchmarks/tuning_synth.py", *(sys.argv[1:] if argv is None else argv)])
        head = ["# In-context tuning against example ensembles", "", f"`{command}` ({result['seconds']:.0f} s)", ""]
        atomic_write(md, lambda tmp: Path(tmp).write_text("\n".join(head + out) + "\n"), overwrite=True)
        print(f"wrote {args.out} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
