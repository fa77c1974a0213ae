"""``seggpt segment --prompt IMAGE MASK [...] --out DIR TARGET...``: segment images shown by example.

For each target ``DIR/<stem>.png`` (label map, indexed PNG, the target's size), ``DIR/<stem>_color.png`` and
``DIR/<stem>_overlay.jpg`` are written atomically. Targets that cannot be read (missing, not an image, truncated,
over ``--max-megapixels``) are named, skipped, and reported at the end with exit status 1; the others are written.
A folder target's sub-folders are segmented with ``--recursive`` (outputs mirror them), and named as skipped
without it. Large targets are decoded only as finely as the model needs and written a band of rows at a time.
"""

from __future__ import annotations

import argparse
import glob
import logging
import sys
import warnings
from pathlib import Path

from seggpt.cli.options import (
    add_device,
    add_image_size,
    add_max_megapixels,
    add_test_views,
    add_threshold,
    device_and_dtype,
)

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
    add_image_size(p, aspect=True)
    add_threshold(p)
    add_test_views(p)
    add_device(p)
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="targets per forward pass")
    p.add_argument(
        "--upsample", choices=["bilinear", "nearest"], default="bilinear", help="how answers reach the target size"
    )
    add_max_megapixels(p)
    p.add_argument(
        "--recursive",
        action="store_true",
        help="also segment the images in sub-folders of folder targets (outputs mirror the sub-folders)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("targets", nargs="+", metavar="TARGET", help="image files, folders of images, or globs")
    p.set_defaults(func=run, trailing="targets")


def expand_targets(
    specs: list[str], recursive: bool = False
) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]], list[str]]:
    """Files, folders (their images, sorted) and globs -> ([(image, output name)], [(spec, problem)] for missing
    ones, [notes on sub-folders skipped]).

    The output name is the file's stem, or for a folder's images their path inside the folder without the suffix
    (``sub/x`` with ``recursive``), so outputs mirror the folder.
    """
    from seggpt.io import IMAGE_SUFFIXES, list_images

    files: list[tuple[Path, Path]] = []
    missing: list[tuple[str, str]] = []
    notes: list[str] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = list_images(path, recursive=recursive)
            if not recursive:
                notes += _skipped_subfolders(path)
            if not found:
                log.warning("%s holds no images (%s)", path, " ".join(IMAGE_SUFFIXES))
            files.extend((f, f.relative_to(path).with_suffix("")) for f in found)
        elif path.exists():
            files.append((path, Path(path.stem)))
        elif _GLOB_CHARS & set(spec):
            found = sorted(Path(f) for f in glob.glob(str(path), recursive=True) if Path(f).is_file())
            if not found:
                missing.append((spec, "the pattern matches no files"))
            files.extend((f, Path(f.stem)) for f in found)
        else:
            missing.append((spec, "no such file or folder"))
    unique = list(dict((f, name) for f, name in files).items())  # the same file given twice is segmented once
    return unique, missing, notes


def _skipped_subfolders(folder: Path) -> list[str]:
    """A note naming the sub-folders of ``folder`` that hold images, which only --recursive segments."""
    from seggpt.io import list_images

    subs = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        n = len(list_images(d, recursive=True))
        if n:
            subs.append(f"{d.name}/ ({n} image{'s' if n > 1 else ''})")
    if not subs:
        return []
    return [f"skipped sub-folder(s) of {folder}: {', '.join(subs)}; pass --recursive to segment them too"]


def output_paths(out: Path, name: Path) -> tuple[Path, Path, Path]:
    """Label map, colour map and overlay of the target whose output name is ``name`` (``x`` or ``sub/x``)."""
    base = out / name
    return (
        base.with_name(f"{base.name}.png"),
        base.with_name(f"{base.name}_color.png"),
        base.with_name(f"{base.name}_overlay.jpg"),
    )


def run(args: argparse.Namespace) -> int:
    from seggpt.predictor import SegGPTPredictor

    device, dtype = device_and_dtype(args)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    targets, failures, notes = expand_targets(args.targets, recursive=args.recursive)
    for note in notes:
        print(note, file=sys.stderr)
    if not targets and not failures:
        raise ValueError("no target images found in " + " ".join(args.targets))
    names: dict[Path, Path] = {}
    for t, name in targets:
        if name in names:
            raise ValueError(
                f"{names[name]} and {t} would both write {name}.png; segment them in separate runs (--out)"
            )
        names[name] = t
    out = Path(args.out).expanduser()
    if not args.overwrite:
        existing = [p for _, name in targets for p in output_paths(out, name) if p.exists()]
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
            threshold=args.threshold,
            scales=args.scales,
            flip=args.flip,
            keep_aspect=args.keep_aspect,
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

    # Named once the run is sure to go on (a bad model or prompt ends it first, with its own one line).
    for spec, problem in failures:
        print(f"skipped {spec}: {problem}", file=sys.stderr)
    done = 0
    with tqdm(total=len(targets), unit="image", disable=args.no_progress, file=sys.stderr) as bar:

        def skip(t: Path, e: Exception) -> None:
            failures.append((str(t), str(e)))
            bar.write(f"skipped {t}: {e}", file=sys.stderr)
            bar.update(1)

        for s in range(0, len(targets), args.batch_size):
            chunk, queries, sizes = [], [], []
            for t, name in targets[s : s + args.batch_size]:
                try:
                    q, size = predictor.prepare_target(t)
                except (ValueError, FileNotFoundError) as e:
                    skip(t, e)
                    continue
                chunk.append((t, name))
                queries.append(q)
                sizes.append(size)
            if not chunk:
                continue
            answers = predictor.paint_each(queries)
            for (t, name), raw, size in zip(chunk, answers, sizes, strict=True):
                labels_path, color_path, overlay_path = output_paths(out, name)
                try:
                    predictor.save_answer(
                        raw, size, labels_path, color_path, overlay_path, image=t, overwrite=args.overwrite
                    )
                except (ValueError, FileNotFoundError) as e:  # e.g. the file changed since it was read
                    skip(t, e)
                    continue
                done += 1
                bar.update(1)

    # Each target that could not be read has had its line on stderr, saying why; the count goes with the summary.
    bad = f"; {len(failures)} could not be read (named above)" if failures else ""
    print(f"segmented {done} of {done + len(failures)} target(s) into {out}{bad}")
    return 1 if failures else 0
