"""``seggpt video --frames DIR_OR_FILE --first-mask MASK.png --out DIR``: propagate object masks through a video.

Writes one DAVIS annotation (palette PNG, pixel value = object id) per frame, named after the frame files
(``00000.png``, ... for a video file), and optionally an overlay video. With ``--prompt-file`` (a learned prompt
from ``seggpt tune``) every frame is segmented with that prompt instead, without propagation.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

from seggpt.cli.options import add_device, add_image_size, add_max_megapixels, add_threshold, device_and_dtype


def _annotation(text: str) -> tuple[int, str]:
    index, sep, path = text.partition(":")
    if not sep or not index.strip().isdigit() or not path:
        raise argparse.ArgumentTypeError(f"expected FRAME:MASK.png (e.g. 40:fix_40.png), got {text!r}")
    return int(index), path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "video",
        help="segment objects through a video from an annotated first frame",
        description=(
            "Video object segmentation by propagation: the annotated frame(s) and the last K predicted frames are "
            "the examples of a feature ensemble for every new frame. Several objects at once; writes DAVIS "
            "annotations (palette PNGs whose pixel values are the object ids)."
        ),
    )
    p.add_argument("--frames", required=True, help="a folder of frames (sorted by name) or a video file (needs PyAV)")
    p.add_argument(
        "--first-mask",
        default=None,
        help="objects on the first frame: a DAVIS palette PNG / label map (ids 1..N), or a binary mask",
    )
    p.add_argument(
        "--prompt-file",
        default=None,
        help="instead of --first-mask: a learned prompt (seggpt tune) that segments every frame on its own, "
        "no propagation; outputs its dataset ids",
    )
    p.add_argument(
        "--annotation",
        action="append",
        default=[],
        type=_annotation,
        metavar="FRAME:MASK",
        help="a later-frame annotation (a new object or a correction), e.g. 40:fix.png; repeatable",
    )
    p.add_argument(
        "--annotation-mode",
        choices=["merge", "replace"],
        default="merge",
        help="merge: objects drawn in a later annotation replace their prediction, others are kept (default); "
        "replace: the annotation is the whole truth for its frame",
    )
    p.add_argument(
        "--context",
        type=int,
        default=None,
        metavar="K",
        help="recent predicted frames kept as examples (default: 2 for the embedded model, which does as well "
        "with 2 as with 8; the paper's 8 for other checkpoints)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="checkpoint: a path (any format) or a Hugging Face hub id (BAAI/seggpt-vit-large, BAAI/SegGPT, "
        "OWNER/REPO/FILE, each with an optional @REVISION); default: the embedded model",
    )
    add_image_size(p)
    add_threshold(p)
    add_max_megapixels(p)
    p.add_argument("--out", required=True, help="folder for the per-frame annotations")
    p.add_argument("--overlay-video", default=None, metavar="FILE", help="also write an overlay video (e.g. .mp4)")
    p.add_argument("--fps", type=float, default=None, help="overlay video rate (default: the source's, or 24)")
    p.add_argument("--task", choices=["instance", "semantic"], default="instance", help="task token (instance)")
    add_device(p)
    p.add_argument(
        "--start",
        type=int,
        default=0,
        metavar="FRAME",
        help="segment and write only frames FRAME onwards: with --annotation FRAME:MASK --overwrite, redo a run "
        "from a corrected frame",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from seggpt.video import SegGPTVideoPredictor
    from seggpt.video_io import VideoWriter, open_frames, overlay, write_davis_png

    device, dtype = device_and_dtype(args)
    if (args.first_mask is None) == (args.prompt_file is None):
        raise ValueError("give --first-mask (propagate annotated objects) or --prompt-file (a learned prompt)")
    if args.prompt_file and (args.annotation or args.start):
        raise ValueError("--annotation and --start propagate from annotated frames; a --prompt-file has none")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    if args.start < 0:
        raise ValueError(f"--start must be a frame index >= 0, got {args.start}")
    if args.context is not None and args.context < 0:
        raise ValueError(f"--context must be >= 0, got {args.context}")
    source = open_frames(args.frames)  # unreadable or missing input fails here, before the model loads
    if not args.overwrite and out.is_dir():
        expected = {f"{n}.png" for n in source.names[args.start :]} if source.names is not None else None
        clash = sorted(p.name for p in out.glob("*.png") if expected is None or p.name in expected)
        if clash:
            raise FileExistsError(
                f"{out} already holds {len(clash)} annotation(s) this run would write ({clash[0]}, ...); "
                "pass --overwrite or choose another --out"
            )
    if args.overlay_video and Path(args.overlay_video).exists() and not args.overwrite:
        raise FileExistsError(f"{args.overlay_video} exists; pass --overwrite to replace it")

    if args.prompt_file:
        from seggpt.predictor import SegGPTPredictor
        from seggpt.tuning import LearnedPromptVideo

        model = SegGPTPredictor(
            args.weights, device=device, dtype=dtype, image_size=args.image_size, threshold=args.threshold
        )
        predictor = LearnedPromptVideo(model, args.prompt_file)
        frames = predictor.propagate(source)
    else:
        # The embedded model propagates at a finer size than it segments images, turned to portrait for portrait
        # frames (a learned prompt, above, keeps the size it was tuned at).
        predictor = SegGPTVideoPredictor(
            args.weights,
            device=device,
            dtype=dtype,
            image_size=args.image_size,
            threshold=args.threshold,
            context=args.context,
            task=args.task,
            annotation_mode=args.annotation_mode,
        )
        annotations = dict(args.annotation)
        frames = predictor.propagate(source, first_masks=args.first_mask, annotations=annotations, start=args.start)
    total = max(len(source) - args.start, 0) if source.names is not None else None
    t0 = time.perf_counter()
    count = 0
    with contextlib.ExitStack() as stack:
        writer = None
        if args.overlay_video:
            fps = args.fps or source.fps or 24.0
            writer = stack.enter_context(VideoWriter(args.overlay_video, fps=fps, overwrite=args.overwrite))
        bar = stack.enter_context(tqdm(total=total, unit="frame", disable=args.no_progress, desc="propagating"))
        for t, labels in frames:
            write_davis_png(out / f"{source.name(t)}.png", labels, overwrite=args.overwrite)
            if writer is not None:
                writer.write(overlay(predictor.last_frame, labels))
            count += 1
            bar.update(1)
            bar.set_postfix(fps=f"{count / (time.perf_counter() - t0):.2f}")
    seconds = time.perf_counter() - t0
    print(
        f"wrote {count} annotations of {predictor.num_objects} object(s) to {out} in {seconds:.1f} s "
        f"({count / max(seconds, 1e-9):.2f} frames/s)" + (f"; overlay video {args.overlay_video}" if writer else "")
    )
    return 0
