"""``seggpt tune --data DIR --out PROMPT``: in-context tuning, a learned prompt for a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from seggpt.cli.options import add_device, add_image_size, add_max_megapixels, device_and_dtype


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="learn a prompt (in-context tuning) on a folder of images and masks, with the model frozen",
        description=(
            "In-context tuning: the model stays frozen and the example itself (image, and mask) is learned on a "
            "dataset. The result is a small .safetensors prompt file that segment / video / eval take with "
            "--prompt-file. It records the model it was tuned for and is refused by any other model. Ctrl-C "
            "finishes the step and writes the tuning state (exit code 130); --resume continues from it."
        ),
    )
    p.add_argument("--data", required=True, help="folder with images/ and masks/ (matching file stems)")
    p.add_argument("--out", required=True, help="the learned prompt file to write (.safetensors)")
    p.add_argument("--task", choices=["semantic", "instance"], default="semantic", help="type token to tune for")
    p.add_argument(
        "--classes",
        nargs="+",
        metavar="ID",
        help="class ids in the masks (or #rrggbb colours for colour masks); default: every class found",
    )
    p.add_argument(
        "--mode",
        choices=["multi", "per-class"],
        default="multi",
        help="multi: one prompt painting class k with palette colour k; per-class: one binary prompt per class",
    )
    p.add_argument("--steps", type=int, default=300, help="optimisation steps (default 300)")
    p.add_argument("--batch-size", type=int, default=8, help="queries per step (default 8)")
    p.add_argument("--lr", type=float, default=0.03, help="AdamW learning rate on the prompt pixels (default 0.03)")
    p.add_argument(
        "--foreground-weight",
        type=float,
        default=1.0,
        help="loss weight of the tuned classes' pixels against 1 for background (default 1, the paper's loss; "
        "raise it when objects are small and the prompt learns to paint nothing)",
    )
    p.add_argument(
        "--loss",
        choices=["canvas", "iou", "both"],
        default="canvas",
        help="canvas: the training loss on the painted answer (the paper's); iou: one minus the soft IoU of each "
        "class over the batch (what evaluation measures); both: their sum (default canvas)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="hold out this share of the images and keep the prompt that segments them best, checked every "
        "--val-every steps (default 0: no hold-out, the last step is kept)",
    )
    p.add_argument("--val-every", type=int, default=25, help="steps between validations (default 25)")
    p.add_argument("--prompts", type=int, default=1, help="examples per prompt, used as a feature ensemble")
    p.add_argument("--init", choices=["example", "noise"], default="example", help="start from real examples or noise")
    p.add_argument("--learn", choices=["both", "image", "mask"], default="both", help="which half of the prompt")
    p.add_argument(
        "--weights",
        default=None,
        help="model checkpoint: a path or a Hugging Face hub id (BAAI/seggpt-vit-large, BAAI/SegGPT, "
        "OWNER/REPO/FILE, each with an optional @REVISION); default: the embedded model",
    )
    add_image_size(p)
    add_max_megapixels(p)
    add_device(p, dtype=False)  # the model stays fp32 for the prompt's gradients; --amp runs in bf16
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (faster on GPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="tuning state file (default: OUT.state.pt)")
    p.add_argument("--checkpoint-every", type=int, default=50, help="save the tuning state every N steps")
    p.add_argument("--resume", action="store_true", help="continue from the tuning state file if it exists")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--preview", default=None, metavar="PNG", help="also save the learned prompt as a picture")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def save_preview(prompts: list, path: str, overwrite: bool = False) -> None:
    """Every example of every prompt as image | mask, one row each, in one picture."""
    import numpy as np

    from seggpt.io import save_rgb

    rows = []
    for prompt in prompts:
        images, masks = prompt.to_uint8()
        rows += [np.concatenate([img, msk], axis=1) for img, msk in zip(images, masks, strict=True)]
    save_rgb(np.concatenate(rows, axis=0), path, overwrite=overwrite)


def run(args: argparse.Namespace) -> int:
    from seggpt.checkpoint import load_model
    from seggpt.tuning import (
        TuneConfig,
        TuningStopped,
        dataset_classes,
        open_folder,
        parse_class,
        save_prompts,
        tune,
    )

    device, _ = device_and_dtype(args)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    state = Path(args.checkpoint) if args.checkpoint else out.with_name(out.name + ".state.pt")
    if state.exists() and not args.resume and not args.overwrite:
        raise FileExistsError(
            f"a tuning state {state} exists from an earlier run: pass --resume to continue it, or --overwrite to "
            "start afresh"
        )
    config = TuneConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        foreground_weight=args.foreground_weight,
        loss=args.loss,
        val_fraction=args.val_fraction,
        val_every=args.val_every,
        num_prompts=args.prompts,
        mode=args.mode,
        init=args.init,
        learn=args.learn,
        amp=args.amp,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
    )
    model = load_model(args.weights, device=device, image_size=args.image_size)
    data = open_folder(args.data, model.config.image_size)
    if args.classes:
        classes = [parse_class(c) for c in args.classes]
    else:
        classes = dataset_classes(data, config.ignore_index)
        if not classes:
            raise ValueError(f"the masks in {args.data} hold no foreground class")
        if len(classes) > 64:
            raise ValueError(f"{len(classes)} classes found in {args.data}; choose some with --classes")
    print(f"tuning {args.mode} prompt for classes {classes} on {len(data)} images, {args.steps} steps")
    try:
        prompts = tune(
            model,
            data,
            classes,
            task=args.task,
            config=config,
            checkpoint=state,
            resume=args.resume,
            progress=not args.no_progress,
            info={"data": str(Path(args.data).resolve())},
        )
    except TuningStopped as stopped:
        print(f"stopped at step {stopped.step} with its state in {state}; run the same command with --resume to go on")
        return 130
    save_prompts(prompts, out, overwrite=args.overwrite)
    if args.preview:
        save_preview(prompts, args.preview, overwrite=args.overwrite)
    state.unlink(missing_ok=True)  # the run is complete: the prompt file is the result
    loss = prompts[0].info.get("final_loss")
    print(f"wrote {out}: {len(prompts)} prompt(s), classes {classes}, final loss {loss:.4f}")
    if "best_step" in prompts[0].info:
        info = prompts[0].info
        print(
            f"kept step {info['best_step']} of {args.steps}: mean IoU {info['val_score']:.1f} on "
            f"{len(info['val_items'])} held-out image(s)"
        )
    return 0
