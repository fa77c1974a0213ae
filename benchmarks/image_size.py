"""The embedded model on finer token grids: held-out one-shot mIoU and speed by the image size it runs at.

The embedded model was trained on 64x64 images (8-pixel patches, 8x8 tokens per image). ``seggpt.load_model``
can run any checkpoint at another size with the same patches (``image_size``): the position embedding and the
relative position tables are interpolated, nothing is learnt. This script measures what that buys on the
SynthContext benchmark (held-out categories, one example, the seeded episodes of ``seggpt eval synthcontext``)
and what it costs, against the size the model was trained at, measured in the same run:

    python benchmarks/image_size.py --sizes 64 80 96 112 128 --episodes 300 --threads 2 --json out.json

Speed is canvases per second of ``SegGPTPredictor.predict_batch`` on 64 rendered 128x128 targets with one example
(model, resizing, decoding; no scene rendering or scoring).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="checkpoint (default: the embedded model)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 80, 96, 112, 128])
    ap.add_argument("--baseline", type=int, default=None, help="size the ratios are against (default: the first)")
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from seggpt.eval.registry import EvalOptions, evaluate
    from seggpt.eval.report import markdown_path
    from seggpt.eval.synthcontext import SynthEpisodeData
    from seggpt.io import atomic_write
    from seggpt.predictor import SegGPTPredictor

    # A fixed one-example task for the speed rows: 64 targets of 128x128, as the benchmark renders them.
    data = SynthEpisodeData(args.seed)
    example = data.item("0/s0")
    targets = [data.image(f"{i}/q") for i in range(64)]

    rows = []
    for size in args.sizes:
        predictor = SegGPTPredictor(args.weights, image_size=size)
        opts = EvalOptions(shots=1, ensemble="feature", seed=args.seed, episodes=args.episodes)
        t0 = time.perf_counter()
        result = evaluate("synthcontext", predictor, None, opts, progress=False)
        seconds = time.perf_counter() - t0
        predictor.set_prompts([example[0]], [example[1]])
        predictor.predict_batch(targets[:4])  # warm-up
        t0 = time.perf_counter()
        predictor.predict_batch(targets)
        speed = len(targets) / (time.perf_counter() - t0)
        tokens = predictor.config.grid_size[0] * predictor.config.grid_size[1]
        rows.append(
            {
                "image_size": size,
                "tokens_per_canvas": tokens,
                "mIoU": result.metrics["mIoU"],
                "FB-IoU": result.metrics["FB-IoU"],
                "canvases_per_s": speed,
                "eval_seconds": seconds,
                "class_iou": dict(result.details["class_iou"]),
            }
        )
        print(f"{size:4d} px: mIoU {rows[-1]['mIoU']:.1f}, {rows[-1]['canvases_per_s']:.1f} canvases/s", flush=True)

    base = next((r for r in rows if r["image_size"] == args.baseline), rows[0])
    lines = [
        f"held-out one-shot, {args.episodes} episodes, seed {args.seed}, {torch.get_num_threads()} thread(s)",
        f"ratios against {base['image_size']} px, measured in the same run",
        "",
        "| image size | tokens per canvas | mIoU | FB-IoU | mIoU gain | canvases/s | cost (x) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        gain = r["mIoU"] - base["mIoU"]
        cost = base["canvases_per_s"] / r["canvases_per_s"]
        lines.append(
            f"| {r['image_size']} | {r['tokens_per_canvas']} | {r['mIoU']:.1f} | {r['FB-IoU']:.1f} | {gain:+.1f} "
            f"| {r['canvases_per_s']:.1f} | {cost:.2f} |"
        )
    print("\n" + "\n".join(lines))
    if args.json:
        out = {
            "weights": args.weights or "embedded",
            "episodes": args.episodes,
            "seed": args.seed,
            "threads": torch.get_num_threads(),
            "baseline": base["image_size"],
            "rows": [_rounded(r) for r in rows],  # the table above is formatted from the unrounded values
        }
        atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(json.dumps(out, indent=2)), overwrite=True)
        md = markdown_path(args.json)  # never the JSON itself, whatever its name
        command = " ".join(["python benchmarks/image_size.py", *(sys.argv[1:] if argv is None else argv)])
        text = "\n".join(["# The embedded model by the image size it runs at", "", f"`{command}`", "", *lines, ""])
        atomic_write(md, lambda tmp: Path(tmp).write_text(text), overwrite=True)
        print(f"\nwrote {args.json} and {md}")
    return 0


def _rounded(value):
    """A copy with every float rounded to 2 decimals, for the JSON report."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 2) if isinstance(value, float) else value


if __name__ == "__main__":
    raise SystemExit(main())
