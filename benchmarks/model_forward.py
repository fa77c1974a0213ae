"""One ViT-L SegGPT forward on the CPU: this project (fp32, bf16) against transformers (fp32), same weights.

One prompt, two 448x448 images (an 896x448 canvas), 2 threads. Each variant runs in its own process so its peak
memory is its own; weights are the same seeded random ViT-L in every process (transformers gets them through
the official->HF key map). Prints a table with time, peak memory and ratios against transformers, and how far
each output is from transformers' (mean abs difference of the query half, normalised space).

    python benchmarks/model_forward.py [--repeat 3] [--threads 2] [--preset vit_large]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    # name: (implementation, dtype, query_only)
    "transformers fp32": ("hf", "fp32", False),
    "seggpt fp32": ("ours", "fp32", False),
    "seggpt fp32 query-only": ("ours", "fp32", True),
    "seggpt bf16": ("ours", "bf16", False),
    "seggpt bf16 query-only": ("ours", "bf16", True),
}


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _build(preset: str):
    import torch

    from seggpt.config import preset as make
    from seggpt.modeling import SegGPT

    torch.manual_seed(0)
    model = SegGPT(make(preset)).eval()
    with torch.no_grad():  # exercise every path: tokens and relative tables are zero after init
        for name, p in model.named_parameters():
            if "token" in name or "rel_pos" in name or "pos_embed" in name:
                p.normal_(0, 0.02)
    return model


def run_variant(name: str, preset: str, repeat: int, threads: int, out: str) -> None:
    import torch

    from seggpt.checkpoint import official_to_hf

    torch.set_num_threads(threads)
    impl, dtype_name, query_only = VARIANTS[name]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    ours = _build(preset)
    cfg = ours.config
    g = torch.Generator().manual_seed(1)
    h, w = cfg.image_size
    prompt, query, pmask = (torch.randn(1, 3, h, w, generator=g) for _ in range(3))

    if impl == "hf":
        from transformers import SegGptConfig, SegGptForImageSegmentation

        from seggpt.checkpoint import config_to_hf

        hf = SegGptForImageSegmentation(SegGptConfig(**config_to_hf(cfg))).eval()
        hf.load_state_dict(official_to_hf(ours.state_dict()))
        del ours

        def forward():
            out = hf(pixel_values=query, prompt_pixel_values=prompt, prompt_masks=pmask, embedding_type="semantic")
            return out.pred_masks[:, :, h:]
    else:
        model = ours.to(dtype)
        images = torch.cat([prompt, query], 2).to(dtype)
        masks = torch.cat([pmask, pmask], 2).to(dtype)
        qmask, seg = model.query_mask(), torch.zeros(1)

        def forward():
            out = model(images, masks, qmask, seg, query_only=query_only)
            return out if query_only else out[:, :, h:]

    times = []
    with torch.inference_mode():
        base = _rss_mb()
        result = forward()  # warm-up (allocator, kernels)
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = forward()
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(result.float(), out + ".pt")
    Path(out).write_text(json.dumps({"seconds": statistics.median(times), "peak_mb": peak, "forward_mb": peak - base}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="timed forwards per variant (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preset", default="vit_large")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), help="subset of: " + ", ".join(VARIANTS))
    ap.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        run_variant(args._child[0], args.preset, args.repeat, args.threads, args._child[1])
        return

    import torch

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.variants):
            out = os.path.join(tmp, f"v{i}")
            print(f"running {name} ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--repeat", str(args.repeat), "--threads", str(args.threads)]
            subprocess.run([*cmd, "--preset", args.preset, "--_child", name, out], check=True)
            results[name] = json.loads(Path(out).read_text())
            results[name]["output"] = torch.load(out + ".pt")

    ref_name = "transformers fp32" if "transformers fp32" in results else next(iter(results))
    ref = results[ref_name]
    fp32 = results.get("seggpt fp32", ref)["output"]
    print(f"\nSegGPT {args.preset} forward, 1 prompt, {args.threads} threads, median of {args.repeat} (CPU)\n")
    print("| variant | seconds | speed-up vs transformers | peak RSS MB | forward MB | query diff vs fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        diff = (r["output"] - fp32).abs().mean().item()
        print(
            f"| {name} | {r['seconds']:.2f} | {ref['seconds'] / r['seconds']:.2f}x | {r['peak_mb']:.0f} | "
            f"{r['forward_mb']:.0f} | {diff:.4f} |"
        )
    print(
        "\nquery diff: mean |output - seggpt fp32| over the query half in normalised space "
        "(transformers row: the two implementations' agreement)."
    )


if __name__ == "__main__":
    main()
