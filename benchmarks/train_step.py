"""Training throughput on this CPU: samples/s of one optimiser step (forward, backward, AdamW) in fp32 and bf16.

Builds a model from a preset (default vit_small, the embedded model's first stages: a 128x64 canvas, patch 8,
width 192, depth 6), a batch from the procedural toy source through the real pipeline (views, random colouring,
masking), and times train steps exactly as the trainer runs them (per-sample loss, grad clipping, autocast for
bf16). Data preparation is timed separately, since the trainer builds samples in the main process by default.

    python benchmarks/train_step.py [--preset vit_small] [--batch 8] [--steps 5] [--threads 2]
                                    [--image-size PX] [--freeze PREFIX ...]

``--image-size`` trains one image at PX x PX (the canvas is two of them), ``--freeze`` leaves the parameters
under those name prefixes out of the backward pass, as a config's ``model.freeze`` does. The embedded model's
stage 4 at another size: ``--preset lite_small --batch 16 --image-size 256 --freeze image_encoder._conv_stem.
image_encoder._bn0. image_encoder._blocks.0. image_encoder._blocks.1. image_encoder._blocks.2.``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import numpy as np
import torch

from seggpt.config import preset
from seggpt.data.masking import MaskingConfig
from seggpt.data.mixture import Mixture, TrainingSamples, collate
from seggpt.data.toy import toy_source
from seggpt.modeling import SegGPT
from seggpt.train import per_sample_loss
from seggpt.train.optim import param_groups


def time_steps(model, batch, precision: str, steps: int, grad_ckpt: bool) -> float:
    model.grad_checkpointing = grad_ckpt
    groups = param_groups(model, 0.05, 0.9, model.config.depth)
    for g in groups:
        g.pop("names")
    opt = torch.optim.AdamW(groups, lr=1e-4)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    p = model.config.patch_size

    def step():
        with ctx:
            pred = model(batch["images"], batch["masks"], batch["bool_masked_pos"], batch["seg_type"])
            loss = per_sample_loss(pred, batch["masks"], batch["bool_masked_pos"], batch["valid"], p).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="vit_small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=None, help="one image's side (default: the preset's)")
    ap.add_argument("--freeze", nargs="*", default=[], help="parameter name prefixes to freeze")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = preset(args.preset)
    if args.image_size:
        cfg = cfg.replace(img_size=(2 * args.image_size, args.image_size))
    h, w = cfg.image_size
    src = toy_source(num_images=64, size=(2 * h, 2 * w))
    ds = TrainingSamples(Mixture([src]), cfg.image_size, cfg.patch_size, MaskingConfig(), seed=0)
    t = time.perf_counter()
    samples = [ds[k] for k in range(4 * args.batch)]
    data_rate = len(samples) / (time.perf_counter() - t)
    batch = collate(samples[: args.batch])
    batch.pop("skipped")

    model = SegGPT(cfg).train()
    for name, prm in model.named_parameters():
        if name.startswith(tuple(args.freeze)):
            prm.requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"preset {args.preset} ({n_params:.1f} M params), canvas {cfg.img_size[0]}x{cfg.img_size[1]}, "
          f"batch {args.batch}, {args.threads} threads, median of {args.steps} steps")  # fmt: skip
    print(f"data pipeline (main process): {data_rate:.1f} samples/s")
    # Shared machines: the load says how much of the CPU this run actually had.
    print("load average at start: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    print()
    print("| precision | grad checkpointing | s/step | samples/s |")
    print("|---|---|---|---|")
    for precision, ckpt in (("fp32", False), ("bf16", False), ("bf16", True)):
        s = time_steps(model, batch, precision, args.steps, ckpt)
        print(f"| {precision} | {'yes' if ckpt else 'no'} | {s:.3f} | {args.batch / s:.1f} |")


if __name__ == "__main__":
    main()
