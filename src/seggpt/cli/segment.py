"""``seggpt segment --prompt IMAGE MASK [...] --out DIR TARGET...``: segment images shown by example.

For each target ``DIR/<stem>.png`` (label map, indexed PNG, the target's size), ``DIR/<stem>_color.png`` and
``DIR/<stem>_overlay.jpg`` are written atomically. Targets that cannot be read are named, skipped, and reported
at the end with exit status 1.
"""

from __future__ import annotations

import argparse
import glob
import logging
import sys
import warnings
from pathlib import Path

from seggpt.cli.options import add_device, add_image_size, device_and_dtype

log = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment images like the given examples (image + mask pairs)",
        description=(
            "Show SegGPT one or more examples (an image and its mask) and segment the same thing in every target. "
            "Masks may be binary images, label maps (one integer per class), palette PNGs or RGB colour masks."
        ),
        epilog="example: seggpt segment --prompt cat.jpg cat_mask.png --out masks/ photos/",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--prompt",
        nargs=2,
        action="append",
        metavar=("IMAGE", "MASK"),
        help="an example image and its mask; repeat for several examples",
    )
    source.add_argument("--prompt-file", default=None, help="a learned prompt from `seggpt tune` instead of --prompt")
    p.add_argument("--task", choices=["semantic", "instance"], default="semantic", help="segment the category "
                   "(semantic, default) or the same object (instance)")  # fmt: skip
    p.add_argument(
        "--ensemble",
        choices=["feature", "spatial", "none"],
        default=None,
        help="how several examples are combined (default: feature when there are several)",
    )
    p.add_argument(
        "--num-labels",
        type=int,
        default=None,
        metavar="K",
        help="foreground labels (default: the largest in the masks)",
    )
    p.add_argument("--weights", default=None, metavar="W", help="checkpoint: a path (official .pth, HF folder, "
                   ".safetensors) or a Hugging Face hub id (BAAI/seggpt-vit-large, BAAI/SegGPT, OWNER/REPO/FILE, "
                   "each with an optional @REVISION); default: the embedded model")  # fmt: skip
    add_image_size(p)
    add_device(p)
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="targets per forward pass")
    p.add_argument(
        "--upsample", choices=["bilinear", "nearest"], default="bilinear", help="how answers reach the target size"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("targets", nargs="+", metavar="TARGET", help="image files, folders of images, or globs")
    p.set_defaults(func=run)


def expand_targets(specs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (their images, sorted) and globs -> (image paths, [(spec, problem)] for missing ones)."""
    from seggpt.io import IMAGE_SUFFIXES, list_images

    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = list_images(path)
            if not found:
                log.warning("%s holds no images (%s)", path, " ".join(IMAGE_SUFFIXES))
            files.extend(found)
        elif path.exists():
            files.append(path)
        elif _GLOB_CHARS & set(spec):
            found = sorted(Path(f) for f in glob.glob(str(path), recursive=True) if Path(f).is_file())
            if not found:
                missing.append((spec, "the pattern matches no files"))
            files.extend(found)
        else:
            missing.append((spec, "no such file or folder"))
    unique = list(dict.fromkeys(files))  # the same file given twice is segmented once
    return unique, missing


def output_paths(out: Path, target: Path) -> tuple[Path, Path, Path]:
    return out / f"{target.stem}.png", out / f"{target.stem}_color.png", out / f"{target.stem}_overlay.jpg"


def run(args: argparse.Namespace) -> int:
    from seggpt.io import read_image
    from seggpt.predictor import SegGPTPredictor

    device, dtype = device_and_dtype(args)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    targets, failures = expand_targets(args.targets)
    if not targets and not failures:
        raise ValueError("no target images found in " + " ".join(args.targets))
    stems: dict[str, Path] = {}
    for t in targets:
        if t.stem in stems:
            raise ValueError(
                f"{stems[t.stem]} and {t} would both write {t.stem}.png; segment them in separate runs (--out)"
            )
        stems[t.stem] = t
    out = Path(args.out).expanduser()
    if not args.overwrite:
        existing = [p for t in targets for p in output_paths(out, t) if p.exists()]
        if existing:
            more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
            raise FileExistsError(
                f"{len(existing)} output(s) exist, e.g. {', '.join(map(str, existing[:3]))}{more}; "
                "pass --overwrite to replace them, or choose another --out"
            )

    try:
        predictor = SegGPTPredictor(
            args.weights,
            device=device,
            dtype=dtype,
            upsample=args.upsample,
            image_size=args.image_size,
        )
    except FileNotFoundError as e:
        if args.weights is None:
            raise FileNotFoundError(f"{e} (--weights PATH)") from None
        raise
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.prompt_file:
            from seggpt.tuning import load_prompt_into

            load_prompt_into(predictor, args.prompt_file, ensemble=args.ensemble)
        else:
            images, masks = zip(*args.prompt, strict=True)
            predictor.set_prompts(
                list(images), list(masks), task=args.task, ensemble=args.ensemble, num_labels=args.num_labels
            )
    for w in caught:  # one plain line each (the default format shows library file names and source lines)
        print(f"warning: {w.message}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    done = 0
    with tqdm(total=len(targets), unit="image", disable=args.no_progress, file=sys.stderr) as bar:
        for s in range(0, len(targets), args.batch_size):
            chunk, arrays = [], []
            for t in targets[s : s + args.batch_size]:
                try:
                    arrays.append(read_image(t))
                    chunk.append(t)
                except (ValueError, FileNotFoundError) as e:
                    failures.append((str(t), str(e)))
                    bar.write(f"skipped {t}: {e}", file=sys.stderr)
                    bar.update(1)
            if not chunk:
                continue
            for t, a, pred in zip(chunk, arrays, predictor.predict_batch(arrays, batch_size=len(arrays)), strict=True):
                labels_path, color_path, overlay_path = output_paths(out, t)
                pred.save_labels(labels_path, overwrite=args.overwrite)
                pred.save_color(color_path, overwrite=args.overwrite)
                pred.save_overlay(overlay_path, a, overwrite=args.overwrite)
                done += 1
                bar.update(1)

    print(f"segmented {done} of {done + len(failures)} target(s) into {out}")
    if failures:
        print(f"{len(failures)} target(s) could not be read:", file=sys.stderr)
        for name, problem in failures:
            print(f"  {name}: {problem}", file=sys.stderr)
        return 1
    return 0
