"""Image-inference throughput: ``SegGPTPredictor`` against ``transformers`` called once per target.

Both run the same seeded random weights (``vit_small`` by default: 128x128 images, the embedded CPU model's
architecture; transformers gets them through the official->HF key map) on the same 32 synthetic targets of mixed
sizes, with 1 and with 4 examples (a 3-class label map each).

    seggpt        ``p.set_prompts(images, masks)`` once, then ``p.predict_batch(targets, batch_size)``: the prompts
                  are read, painted and patch-embedded once; targets run batch_size x P canvases at a time
                  (feature ensemble for 4 examples); only the query half is decoded.
    transformers  what its documentation shows, per target: ``processor(images=target, prompt_images=...,
                  prompt_masks=..., num_labels=K)``, ``model(**inputs)``, then
                  ``processor.post_process_semantic_segmentation(outputs, target_sizes=[...], num_labels=K)``.
                  Several prompts need the query duplicated by hand and ``feature_ensemble=True``.
                  (``SegGptImageProcessorPil``: the torchvision-backed processor needs torchvision, which this
                  project does not install.)

Timing covers everything from the inputs (numpy arrays) to label maps at the targets' sizes, including setting
the prompts for seggpt. Best of ``--repeat`` runs (the machine is shared). That both compute the same thing is
the tests' job (tests/test_model.py, tests/test_predictor.py); random weights paint nearly one colour, so label
agreement here would prove nothing. ``--weights CKPT`` benchmarks a real checkpoint instead of random weights.
``--dtype bf16|int8`` runs the seggpt predictor on a copy of the model in that precision (the peer stays fp32) and
adds the share of target pixels whose label it gives as the fp32 predictor does (meaningful with real weights).
``--scales 1,1.5`` / ``--flip`` time the predictor with those test-time views (the peer stays at one view): what
the accuracy they add costs. ``--keep-aspect`` reads each image at its own shape (the plain peer too); with mixed
sizes that makes batches of each shape, so ``--target-size 360x480`` (every image that size, CamVid's) times a
folder of one camera's photographs.

    python benchmarks/predictor.py [--preset vit_small | --weights CKPT [--image-size 256]] [--targets 32]
                                   [--batch-size 8] [--repeat 1] [--threads 2] [--dtype fp32]
                                   [--scales 1,1.5] [--flip] [--target-size HxW] [--keep-aspect]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def make_data(n_targets: int, n_prompts: int, seed: int = 0, size: tuple[int, int] | None = None):
    """Blobby synthetic images and 3-class label maps (sizes vary like real photos, or all ``size``)."""
    rng = np.random.default_rng(seed)

    def image(h, w):
        yy, xx = np.mgrid[:h, :w]
        base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 127 // (h + w))], -1)
        return np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)

    def labels(h, w):
        lab = np.zeros((h, w), np.int64)
        for k in (1, 2, 3):
            y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
            lab[y0 : y0 + h // 3, x0 : x0 + w // 3] = k
        return lab

    sizes = [(int(rng.integers(180, 480)), int(rng.integers(180, 640))) for _ in range(n_targets + n_prompts)]
    sizes = sizes if size is None else [size] * len(sizes)
    prompts = [(image(h, w), labels(h, w)) for h, w in sizes[:n_prompts]]
    targets = [image(h, w) for h, w in sizes[n_prompts:]]
    return prompts, targets


def run_ours(model, prompts, targets, batch_size, views=None):
    from seggpt.predictor import SegGPTPredictor

    p = SegGPTPredictor(
        model, **(views or {})
    )  # defaults, as users run it (bilinear upsampling costs a little more than nearest)
    t0 = time.perf_counter()
    p.set_prompts([i for i, _ in prompts], [m for _, m in prompts], num_labels=3)
    preds = p.predict_batch(targets, batch_size=batch_size)
    return time.perf_counter() - t0, [x.labels for x in preds]


def run_hf(hf, processor, prompts, targets):
    k = len(prompts)
    images, masks = [i for i, _ in prompts], [m for _, m in prompts]
    out = []
    t0 = time.perf_counter()
    for t in targets:
        inputs = processor(images=[t] * k, prompt_images=images, prompt_masks=masks, num_labels=3, return_tensors="pt")
        with torch.no_grad():
            outputs = hf(**inputs, feature_ensemble=k > 1)
        outputs.pred_masks = outputs.pred_masks[:1]  # after the ensemble all k answers are the same query's
        labels = processor.post_process_semantic_segmentation(outputs, target_sizes=[t.shape[:2]], num_labels=3)[0]
        out.append(labels.numpy())
    return time.perf_counter() - t0, out


def run_plain(model, prompts, targets, views=None):
    """The peer for models transformers cannot run (the embedded model's CNN image stream): the same model called
    once per target on the whole stacked canvas (``paint(cached=False)``), without the predictor's cached examples,
    batching or query-only decoding."""
    from seggpt.predictor import SegGPTPredictor

    p = SegGPTPredictor(model, keep_aspect=bool((views or {}).get("keep_aspect")))
    t0 = time.perf_counter()
    p.set_prompts([i for i, _ in prompts], [m for _, m in prompts], num_labels=3)
    out = []
    for t in targets:
        q, sizes = p.prepare_targets([t])
        out.append(p.decode(p.paint(q, cached=False)[0], sizes[0]).labels)
    return time.perf_counter() - t0, out


def main() -> None:
    from seggpt.cli.options import _image_size

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="vit_small")
    ap.add_argument(
        "--weights",
        default=None,
        help="a checkpoint to benchmark instead of random --preset weights ('embedded': the packaged model)",
    )
    ap.add_argument(
        "--image-size",
        type=_image_size,
        default=None,
        help="with --weights: the side (or HxW) to run it at (a candidate file otherwise runs at its training "
        "size; the embedded model at its own)",
    )
    ap.add_argument("--targets", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "int8"), help="of the seggpt predictor")
    ap.add_argument("--scales", default=None, help="test-time scales of the seggpt predictor, like 1,1.5")
    ap.add_argument("--flip", action="store_true", help="the seggpt predictor also paints mirrored targets")
    ap.add_argument("--target-size", default=None, help="every image HxW (default: mixed sizes)")
    ap.add_argument(
        "--keep-aspect",
        action="store_true",
        help="the seggpt predictor reads each image at its own shape (SegGPTPredictor(keep_aspect=True))",
    )
    args = ap.parse_args()
    views = {"scales": [float(v) for v in args.scales.split(",")] if args.scales else None, "flip": args.flip}
    size = tuple(int(v) for v in args.target_size.lower().split("x")) if args.target_size else None
    torch.set_num_threads(args.threads)

    from transformers import SegGptConfig, SegGptForImageSegmentation
    from transformers.models.seggpt.image_processing_pil_seggpt import SegGptImageProcessorPil

    from seggpt.checkpoint import config_to_hf, load_model, official_to_hf
    from seggpt.config import preset
    from seggpt.modeling import SegGPT

    if args.weights:
        source = None if args.weights == "embedded" else args.weights
        model = load_model(source, device="cpu", image_size=args.image_size)
        cfg, name = model.config, args.weights
    else:
        try:
            cfg = preset(args.preset)
        except ValueError as e:  # vit_small's taps (1, 3, 5, 7) come before merge_index 2 in this build of config.py
            cfg = preset(args.preset, merge_index=1)
            print(f"note: {e}; benchmarking with merge_index=1")
        torch.manual_seed(0)
        model = SegGPT(cfg).eval()
        with torch.no_grad():
            for prm in model.parameters():  # random, but not the zero-initialised tokens: a realistic workload
                prm.normal_(0, 0.05)
        name = f"{args.preset} random weights"
    if cfg.image_encoder:  # transformers has no CNN image stream: the peer is the plain full-canvas call
        peer_name = "plain model call per target"
        peer = run_plain
    else:
        hf = SegGptForImageSegmentation(SegGptConfig(**config_to_hf(cfg))).eval()
        hf.load_state_dict(official_to_hf(model.state_dict()), strict=True)
        h, w = cfg.image_size
        processor = SegGptImageProcessorPil(size={"height": h, "width": w})
        peer_name = "transformers per target"

        def peer(model, prompts, targets, views=None):  # transformers reads every image at one size
            return run_hf(hf, processor, prompts, targets)

    views["keep_aspect"] = bool(args.keep_aspect)
    ours_model = model
    if args.dtype != "fp32":  # a copy: the peer keeps the fp32 model (int8 quantises in place)
        import copy

        from seggpt.checkpoint import to_precision

        ours_model = to_precision(copy.deepcopy(model), "cpu", args.dtype)

    rows = []
    for k in (1, 4):
        prompts, targets = make_data(args.targets, k, size=size)
        run_ours(ours_model, prompts, targets[:2], args.batch_size, views)  # warm-up
        peer(model, prompts, targets[:2], views)
        ours = [run_ours(ours_model, prompts, targets, args.batch_size, views) for _ in range(args.repeat)]
        theirs = [peer(model, prompts, targets, views)[0] for _ in range(args.repeat)]
        times = [t for t, _ in ours]
        agree = ""
        if args.dtype != "fp32":
            reference = run_ours(model, prompts, targets, args.batch_size, {"keep_aspect": views["keep_aspect"]})[1]
            same = sum(int((a == b).sum()) for a, b in zip(ours[0][1], reference, strict=True))
            agree = f" {100 * same / sum(a.size for a in reference):.1f}% |"
        rows.append((k, len(targets) / min(theirs), len(targets) / min(times), min(theirs) / min(times), times, agree))

    print(f"\n{name} ({cfg.img_size[0] // 2}x{cfg.img_size[1]} images), {args.targets} targets, "
          f"{args.threads} threads, batch size {args.batch_size}, best of {args.repeat}, "
          f"seggpt in {args.dtype}, targets {args.target_size or 'of mixed sizes'}"
          + (", each read at its shape" if args.keep_aspect else "")
          + (f", test-time scales {args.scales}" if args.scales else "") + (", flip" if args.flip else ""))  # fmt: skip
    extra = (" labels as fp32 |", "---:|") if args.dtype != "fp32" else ("", "")
    print(
        f"| examples | {peer_name} (targets/s) | seggpt predictor (targets/s) | speed-up | predictor, every run (s) |"
        + extra[0]
    )
    print("|---:|---:|---:|---:|---|" + extra[1])
    for k, t_hf, t_ours, ratio, runs, agree in rows:
        print(f"| {k} | {t_hf:.2f} | {t_ours:.2f} | {ratio:.2f}x | {', '.join(f'{r:.2f}' for r in runs)} |{agree}")


if __name__ == "__main__":
    main()
