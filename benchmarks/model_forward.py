"""One ViT-L SegGPT forward on the CPU: this project (fp32, bf16, int8) against transformers (fp32), same weights.

One prompt, two 448x448 images (an 896x448 canvas), 2 threads. Each variant runs in its own process so its peak
memory is its own; weights are the same seeded random ViT-L in every process (transformers gets them through
the official->HF key map). Prints a table with time, peak memory and ratios against transformers, and how far
each output is from this project's fp32 (mean abs difference of the query half, normalised space). The feature
ensemble rows run 4 prompts for one query, as the predictor does (the query half once: forward_encoder_shared;
"unshared" is the full P canvases, the path before #26), and compare with four one-prompt query-only forwards of
the same dtype. Then it measures this CPU's fp32, bf16 and int8 GEMM rates on the encoder's matmul shapes and
prints the matmul floor: the fastest a forward could be if only its matmuls cost time.

    python benchmarks/model_forward.py [--repeat 3] [--threads 2] [--preset vit_large]

The int8 rows are seggpt's own int8 linear layers (seggpt.modeling.quant); the two library alternatives it was
chosen against run with ``--variants "int8 torch.ao query-only" "int8 torchao query-only"`` (torchao must be
installed for the second).
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
import warnings
from pathlib import Path

ENSEMBLE = 4  # prompts of the feature ensemble rows
VARIANTS = {
    # name: (implementation, dtype, query_only, prompts)
    "transformers fp32": ("hf", "fp32", False, 1),
    "seggpt fp32": ("ours", "fp32", False, 1),
    "seggpt fp32 query-only": ("ours", "fp32", True, 1),
    "seggpt bf16": ("ours", "bf16", False, 1),
    "seggpt bf16 query-only": ("ours", "bf16", True, 1),
    "seggpt int8": ("ours", "int8", False, 1),
    "seggpt int8 query-only": ("ours", "int8", True, 1),
    f"seggpt fp32 ensemble x{ENSEMBLE} unshared": ("unshared", "fp32", True, ENSEMBLE),
    f"seggpt fp32 ensemble x{ENSEMBLE}": ("ours", "fp32", True, ENSEMBLE),
    f"seggpt bf16 ensemble x{ENSEMBLE}": ("ours", "bf16", True, ENSEMBLE),
    f"seggpt int8 ensemble x{ENSEMBLE}": ("ours", "int8", True, ENSEMBLE),
}
ALTERNATIVES = {  # the int8 libraries seggpt's own layers were measured against (not run by default)
    "int8 torch.ao query-only": ("torch.ao", "int8", True, 1),
    "int8 torchao query-only": ("torchao", "int8", True, 1),
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


def _quantize_alternative(model, impl: str):
    """The model with its linear layers quantised by a library instead of seggpt.modeling.quant."""
    import torch
    from torch import nn

    if impl == "torch.ao":  # float32 activations only; deprecated (it warns), weights per tensor
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8), torch.float32
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    from seggpt.devices import int8_compute_dtype

    dtype = int8_compute_dtype()
    quantize_(model.to(dtype), Int8DynamicActivationInt8WeightConfig())
    return model, dtype


def run_variant(name: str, preset: str, repeat: int, threads: int, out: str) -> None:
    import torch

    from seggpt.checkpoint import official_to_hf, to_precision
    from seggpt.devices import int8_compute_dtype

    torch.set_num_threads(threads)
    impl, dtype_name, query_only, p = {**VARIANTS, **ALTERNATIVES}[name]
    ours = _build(preset)
    cfg = ours.config
    g = torch.Generator().manual_seed(1)
    h, w = cfg.image_size
    prompt, query, pmask = (torch.randn(1, 3, h, w, generator=g) for _ in range(3))
    if p > 1:  # p different examples of the same query
        prompt = torch.cat([prompt, torch.randn(p - 1, 3, h, w, generator=g)])
        pmask = torch.cat([pmask, torch.randn(p - 1, 3, h, w, generator=g)])

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
        if impl in ("torch.ao", "torchao"):
            model, dtype = _quantize_alternative(ours, impl)
        else:
            model = to_precision(ours, "cpu", dtype_name)
            dtype = int8_compute_dtype() if dtype_name == "int8" else model.patch_embed.proj.weight.dtype
        images = torch.cat([prompt, query.expand(p, -1, -1, -1)], 2).to(dtype)
        masks = torch.cat([pmask, pmask], 2).to(dtype)
        qmask, seg = model.query_mask(), torch.zeros(p, dtype=torch.long)

        def forward():
            if p > 1 and impl == "ours":
                return shared_ensemble(model, images, masks, qmask, seg)
            out = model(images, masks, qmask, seg, p > 1, num_prompts=p, query_only=query_only)
            return (out if query_only else out[:, :, h:])[:1]

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


def shared_ensemble(model, images, masks, qmask, seg):
    """The feature ensemble of P canvases (P, 3, 2h, w) whose query halves are equal, as SegGPTPredictor.paint runs
    it: the query embedded, encoded and decoded once -> (1, 3, h, w)."""
    import torch

    p, h = images.shape[0], images.shape[2] // 2
    x_p, prompt_skips = model.embed_images(images[:, :, :h])
    x_q, skips = model.embed_images(images[:1, :, h:])
    x = torch.cat([x_p, x_q.expand(p, -1, -1, -1)], dim=1)
    tokens = model.embed(x, model.embed_canvas(masks), qmask.expand(p, -1), seg)
    prior = None
    if model.config.fine_prior:  # the query reads all P examples at once
        prior = model.ensemble_prior(skips[2], *model.example_keys(prompt_skips[2], masks[:, :, :h]))
    taps = model.forward_encoder_shared(tokens, p)
    return model.forward_decoder(taps, query_only=True, skips=skips, prior=prior)


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


def ensemble_flop_ratio(preset: str, prompts: int = ENSEMBLE) -> float:
    """FLOPs of the shared P-prompt feature ensemble (the path the ensemble rows time) over P one-prompt
    query-only forwards, counted by torch's FlopCounterMode on the meta device (no weights, no time) with
    attention as explicit matmuls. It is the least "vs 4 one-prompt forwards" can be while the answer stays exact:
    the query half's own work is shared, but each prompt's attention (its rows over the whole canvas, and the
    query rows over its keys) is its own."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from seggpt.config import preset as make
    from seggpt.modeling import SegGPT
    from seggpt.modeling.layers import Attention

    cfg, p = make(preset), prompts
    with torch.device("meta"):
        model = SegGPT(cfg).eval()
        h, w = cfg.image_size
        images, masks = torch.empty(p, 3, 2 * h, w), torch.empty(p, 3, 2 * h, w)
        seg, qmask = torch.zeros(p, dtype=torch.long), model.query_mask().to("meta")
    for m in model.modules():
        if isinstance(m, Attention):
            m.impl = "eager"  # the fused CPU kernel is not counted; its products are the same

    def one():
        model(images[:1], masks[:1], qmask, seg[:1], False, num_prompts=1, query_only=True)

    def shared():
        shared_ensemble(model, images, masks, qmask, seg)

    flops = []
    for fn in (one, shared):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            fn()
        flops.append(counter.get_total_flops())
    return flops[1] / (p * flops[0])


def gemm_rate(dtype, threads: int, m: int, k: int, n: int, batch: int = 1, repeat: int = 5) -> float:
    """Measured GFLOP/s of a (batch, m, k) @ (batch, k, n) matmul in ``dtype`` at ``threads`` threads; int8 is the
    int8 x int8 -> int32 kernel of seggpt's int8 linear layers (batch 1)."""
    import torch

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    if dtype is torch.int8:
        a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=g)
        b = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g).t()  # as Int8Linear holds it

        def mm():
            return torch._int_mm(a, b)
    else:
        a = torch.randn(batch, m, k, generator=g).to(dtype)
        b = torch.randn(batch, k, n, generator=g).to(dtype)

        def mm():
            return torch.matmul(a, b)

    mm()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        mm()
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
    print("each shape), with softmax, norms, GELU, the bias and the decoder free (int8: linear layers in int8,")
    print("attention in bf16, as --dtype int8 runs them):\n")
    print("| dtype | linear GFLOP/s | attention GFLOP/s | matmul floor s | best possible speed-up vs transformers |")
    print("|---|---:|---:|---:|---:|")
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("int8", torch.int8)):
        lin = gemm_rate(dtype, threads, n, c, int(c * cfg.mlp_ratio))
        att = rates["bf16"][1] if dtype is torch.int8 else gemm_rate(dtype, threads, n, head, n, batch=cfg.num_heads)
        rates[name] = (lin, att)
        floor = linear / (lin * 1e9) + attention / (att * 1e9)
        best = f"{transformers_seconds / floor:.2f}x" if transformers_seconds else "-"
        print(f"| {name} | {lin:.0f} | {att:.0f} | {floor:.2f} | {best} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="timed forwards per variant (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preset", default="vit_large")
    choices = {**VARIANTS, **ALTERNATIVES}
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), help="subset of: " + ", ".join(choices))
    ap.add_argument("--no-ceiling", action="store_true", help="skip measuring the GEMM rates")
    ap.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        run_variant(args._child[0], args.preset, args.repeat, args.threads, args._child[1])
        return
    unknown = [v for v in args.variants if v not in choices]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {list(choices)}")
    from seggpt.config import preset as make

    if make(args.preset).image_encoder:  # transformers has no such model
        args.variants = [v for v in args.variants if choices[v][0] != "hf"]

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

    ref_name = "transformers fp32" if "transformers fp32" in results else None
    ens = f"ensemble x{ENSEMBLE}"
    one_fp32 = results.get("seggpt fp32", results.get("seggpt fp32 query-only"))
    ens_fp32 = results.get(f"seggpt fp32 {ens} unshared", results.get(f"seggpt fp32 {ens}"))
    print(f"\nSegGPT {args.preset} forward, {args.threads} threads, median of {args.repeat} (CPU)\n")
    print(
        "| variant | seconds | speed-up vs transformers | vs 4 one-prompt forwards | peak RSS MB | forward MB | "
        "query diff vs fp32 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        impl, dtype, _, p = choices[name]
        fp32 = ens_fp32 if p > 1 else one_fp32
        diff = f"{(r['output'] - fp32['output']).abs().mean().item():.4f}" if fp32 else "-"
        speed = f"{results[ref_name]['seconds'] / r['seconds']:.2f}x" if ref_name else "-"
        single = results.get(f"seggpt {dtype} query-only")
        versus = f"{r['seconds'] / (p * single['seconds']):.2f}x" if p > 1 and single else "-"
        secs = f"{r['seconds']:.2f}" if r["seconds"] >= 1 else f"{r['seconds']:.3f}"
        print(f"| {name} | {secs} | {speed} | {versus} | {r['peak_mb']:.0f} | {r['forward_mb']:.0f} | {diff} |")
    print(
        "\nquery diff: mean |output - seggpt fp32| over the query half in normalised space (transformers row: the "
        f"two implementations' agreement; ensemble rows: against the fp32 {ens} unshared). vs 4 one-prompt forwards: "
        f"the {ens} row's time over {ENSEMBLE} times its dtype's one-prompt query-only row."
    )
    if any(choices[name][3] > 1 for name in results):
        bound = ensemble_flop_ratio(args.preset)
        print(
            f"The shared {ens} does {bound:.3f} of the FLOPs of {ENSEMBLE} one-prompt forwards (FlopCounterMode): "
            "the least its time ratio can be while the answer stays exact."
        )
    if not args.no_ceiling:
        ref_seconds = results["transformers fp32"]["seconds"] if "transformers fp32" in results else None
        print_ceiling(args.preset, args.threads, ref_seconds)


if __name__ == "__main__":
    main()
