"""One ViT-L SegGPT forward on the CPU: this project (fp32, bf16) against transformers (fp32), same weights.

One prompt, two 448x448 images (an 896x448 canvas), 2 threads. Each variant runs in its own process so its peak
memory is its own; weights are the same seeded random ViT-L in every process (transformers gets them through
the official->HF key map). Prints a table with time, peak memory and ratios against transformers, and how far
each output is from transformers' (mean abs difference of the query half, normalised space). Then it measures
this CPU's fp32 and bf16 GEMM rates on the encoder's matmul shapes and prints the matmul floor: the fastest a
forward could be if only its matmuls cost time, and so the best speed-up any implementation could reach here.

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


def encoder_matmul_flops(cfg) -> tuple[float, float]:
    """(linear, attention) multiply-add FLOPs of the encoder's matmuls for one canvas: every block on every
    stream (two streams up to and including the merge block), qkv + proj + MLP, and QK^T + AV."""
    n = cfg.grid_size[0] * cfg.grid_size[1]
    c = cfg.embed_dim
    mlp = int(c * cfg.mlp_ratio)
    block_streams = cfg.depth + cfg.merge_index + 1
    linear = block_streams * n * (4 * c * c + 2 * c * mlp) * 2
    attention = block_streams * 2 * n * n * c * 2
    return float(linear), float(attention)


def gemm_rate(dtype, threads: int, m: int, k: int, n: int, batch: int = 1, repeat: int = 5) -> float:
    """Measured GFLOP/s of a (batch, m, k) @ (batch, k, n) matmul in ``dtype`` at ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(batch, m, k, generator=g).to(dtype)
    b = torch.randn(batch, k, n, generator=g).to(dtype)
    torch.matmul(a, b)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * batch * m * k * n / min(times) / 1e9


def print_ceiling(preset: str, threads: int, transformers_seconds: float | None) -> None:
    """What the CPU's matmul units allow: the encoder's matmuls alone at the measured GEMM rates."""
    import torch

    from seggpt.config import preset as make

    cfg = make(preset)
    linear, attention = encoder_matmul_flops(cfg)
    n, c = cfg.grid_size[0] * cfg.grid_size[1], cfg.embed_dim
    head = c // cfg.num_heads
    print(f"\nMatmul ceiling, threads={threads}: the encoder's {linear / 1e9:.0f} GFLOP of linear layers and")
    print(f"{attention / 1e9:.0f} GFLOP of attention products at this CPU's measured GEMM rates (one large matmul of")
    print("each shape), with softmax, norms, GELU, the bias and the decoder free:\n")
    print("| dtype | linear GFLOP/s | attention GFLOP/s | matmul floor s | best possible speed-up vs transformers |")
    print("|---|---:|---:|---:|---:|")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        lin = gemm_rate(dtype, threads, n, c, int(c * cfg.mlp_ratio))
        att = gemm_rate(dtype, threads, n, head, n, batch=cfg.num_heads)
        floor = linear / (lin * 1e9) + attention / (att * 1e9)
        best = f"{transformers_seconds / floor:.2f}x" if transformers_seconds else "-"
        print(f"| {name} | {lin:.0f} | {att:.0f} | {floor:.2f} | {best} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="timed forwards per variant (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preset", default="vit_large")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), help="subset of: " + ", ".join(VARIANTS))
    ap.add_argument("--no-ceiling", action="store_true", help="skip measuring the GEMM rates")
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
    if not args.no_ceiling:
        ref_seconds = results["transformers fp32"]["seconds"] if "transformers fp32" in results else None
        print_ceiling(args.preset, args.threads, ref_seconds)


if __name__ == "__main__":
    main()
