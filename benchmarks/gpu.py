"""The CUDA path's speed: ViT-L SegGPT forwards on a GPU, this project in fp32 / bf16 / fp16 against transformers
in fp32 and fp16, and the embedded model's predictor on the GPU against the same predictor on the CPU.

    python benchmarks/gpu.py [--repeat 20] [--batches 1 8] [--threads 2]

ViT-L rows: the same seeded random weights in both implementations (transformers gets them through the
official->HF key map), one prompt, canvases of two 448x448 images, ``batch`` canvases a forward; milliseconds a
canvas (median of ``--repeat`` forwards after warm-up, timed with ``torch.cuda.synchronize``), peak GPU memory,
the speed-up against transformers fp32 at the same batch, and the mean |output - seggpt fp32| over the query half
(normalised space; the transformers fp32 row is the two implementations' agreement). fp32 rows run without TF32.

Embedded rows: ``SegGPTPredictor()`` (the shipped model at its defaults, one example) on 64 synthetic targets of mixed
sizes, targets/s (best of ``--repeat`` passes, capped at 3), on the GPU in each dtype and on ``--threads`` CPU
threads in fp32, with the share of pixels labelled as the CPU labels them. Prints two Markdown tables.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_forward import _build  # noqa: E402
from predictor import make_data  # noqa: E402


def _time(forward, repeat: int) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        out = forward()  # warm-up: kernels, allocator
        torch.cuda.synchronize()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = forward()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def vit_large_rows(batches: list[int], repeat: int) -> list[tuple]:
    from transformers import SegGptConfig, SegGptForImageSegmentation

    from seggpt.checkpoint import config_to_hf, official_to_hf, to_precision

    base = _build("vit_large")
    cfg = base.config
    h, w = cfg.image_size
    state = base.state_dict()  # base stays as built: each variant gets these weights
    rows = []
    for b in batches:
        g = torch.Generator().manual_seed(b)
        prompt, query, pmask = (torch.randn(b, 3, h, w, generator=g).cuda() for _ in range(3))
        results = {}
        for impl, dtype_name in (("transformers", "fp32"), ("transformers", "fp16"), ("seggpt", "fp32"),
                                 ("seggpt", "bf16"), ("seggpt", "fp16")):  # fmt: skip
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            if impl == "transformers":
                hf = SegGptForImageSegmentation(SegGptConfig(**config_to_hf(cfg))).eval()
                hf.load_state_dict(official_to_hf(state))
                hf = hf.to("cuda", dtype)
                args = {"pixel_values": query.to(dtype), "prompt_pixel_values": prompt.to(dtype),
                        "prompt_masks": pmask.to(dtype), "embedding_type": "semantic"}  # fmt: skip

                def forward(hf=hf, args=args):
                    return hf(**args).pred_masks[:, :, h:]
            else:
                model = _build("vit_large")
                model.load_state_dict(state)
                model = to_precision(model, "cuda", dtype_name)
                images = torch.cat([prompt, query], 2).to(dtype)
                masks = torch.cat([pmask, pmask], 2).to(dtype)
                qmask, seg = model.query_mask().cuda(), torch.zeros(b, dtype=torch.long, device="cuda")

                def forward(model=model, images=images, masks=masks, qmask=qmask, seg=seg):
                    return model(images, masks, qmask, seg, query_only=True)

            seconds, out = _time(forward, repeat)
            results[(impl, dtype_name)] = (seconds, torch.cuda.max_memory_allocated() / 2**20, out.float())
            del forward
            hf = model = None
        ref = results[("seggpt", "fp32")][2]
        peer = results[("transformers", "fp32")][0]
        for (impl, dtype_name), (seconds, peak, out) in results.items():
            diff = (out - ref).abs().mean().item()
            rows.append((impl, dtype_name, b, 1000 * seconds / b, peer / seconds, peak, diff))
    return rows


def embedded_rows(repeat: int, threads: int) -> list[tuple]:
    from seggpt.predictor import SegGPTPredictor

    prompts, targets = make_data(64, 1)
    image, labels = prompts[0]
    rows, reference = [], None
    for device, dtype in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "bf16"), ("cuda", "fp16")):
        torch.set_num_threads(threads)
        p = SegGPTPredictor(device=device, dtype=dtype)
        best, answers = float("inf"), None
        for _ in range(min(repeat, 3)):
            t0 = time.perf_counter()
            p.set_prompts([image], [labels], num_labels=3)
            answers = [np.asarray(x.labels) for x in p.predict_batch(targets, batch_size=16)]
            best = min(best, time.perf_counter() - t0)
        if reference is None:
            reference = answers
        agree = sum((a == r).sum() for a, r in zip(answers, reference, strict=True)) / sum(r.size for r in reference)
        rows.append((device if device == "cuda" else f"cpu, {threads} threads", dtype, len(targets) / best, agree))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="canvases a ViT-L forward")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of the embedded model's CPU row")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA GPU here; this benchmark measures the CUDA path (benchmarks/predictor.py is the CPU's)",
              file=sys.stderr)  # fmt: skip
        return 2
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("ViT-L SegGPT forward, one prompt, 896x448 canvas, query half decoded\n")
    print("| implementation | dtype | batch | ms a canvas | vs transformers fp32 | peak GPU MiB | diff vs fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for impl, dtype, b, ms, speed, peak, diff in vit_large_rows(args.batches, args.repeat):
        print(f"| {impl} | {dtype} | {b} | {ms:.1f} | {speed:.2f}x | {peak:.0f} | {diff:.4f} |")
    print("\nEmbedded model, SegGPTPredictor(), one example, 64 targets at 256 px, batch 16\n")
    print("| device | dtype | targets/s | labels as the CPU's |")
    print("|---|---|---:|---:|")
    rows = embedded_rows(args.repeat, args.threads)
    for device, dtype, rate, agree in rows:
        print(f"| {device} | {dtype} | {rate:.1f} | {100 * agree:.2f}% |")
    print(f"\nGPU fp32 against the CPU: {rows[1][2] / rows[0][2]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
