"""DAVIS-2017 semi-supervised video object segmentation (val, 30 sequences, 480p).

The first frame's annotation gives the objects (labels 1..N, N its largest label; 255 is void); the video
predictor propagates them through the sequence. Every frame but the first and the last is scored, per
object: J (region IoU) and F (boundary F-measure). Per object, mean / recall / decay over its frames; the
benchmark's numbers average those over all objects of all sequences, and J&F is the mean of J and F.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from seggpt.checkpoint import PAPER_VIDEO_CONTEXT
from seggpt.eval._files import layout_error, read_raw_mask, require_dir, require_file
from seggpt.eval.distributed import Shard
from seggpt.eval.metrics import IGNORE, ObjectScores, davis_f, davis_j, davis_summary
from seggpt.eval.registry import Benchmark, BenchmarkResult, EvalOptions, register
from seggpt.eval.resume import stop_point, units

log = logging.getLogger(__name__)

NAME = "davis2017"
DEFAULT_CONTEXT = PAPER_VIDEO_CONTEXT
LAYOUT = """\
DIR/                                     (DAVIS-2017 trainval, 480p)
  JPEGImages/480p/<sequence>/00000.jpg ...
  Annotations/480p/<sequence>/00000.png ...   palette PNGs: object ids 1..N, 0 background, 255 void
  ImageSets/2017/val.txt                      the sequence names, one per line
"""
PAPER = {"J&F-Mean": 75.6, "J-Mean": 72.5, "F-Mean": 78.6}
# J&F by number of context frames (paper Table 4).
PAPER_BY_CONTEXT = {1: 70.0, 4: 74.7, 8: 75.6, 12: 74.8, 16: 74.6}


def sequences(data: Path, options: EvalOptions) -> list[str]:
    require_dir(data, LAYOUT, "DAVIS-2017")
    split = Path(options.split_file) if options.split_file else data / "ImageSets" / "2017" / "val.txt"
    require_file(split, LAYOUT, "sequence list")
    seqs = [ln.strip() for ln in split.read_text().splitlines() if ln.strip()]
    if not seqs:
        raise layout_error(f"{split} lists no sequence", LAYOUT)
    for s in seqs:
        require_dir(data / "JPEGImages" / "480p" / s, LAYOUT, f"frames of sequence {s!r}")
        require_dir(data / "Annotations" / "480p" / s, LAYOUT, f"annotations of sequence {s!r}")
    return seqs[: options.limit] if options.limit else seqs


def video_predictor(predictor: Any, context: int | None) -> Any:
    """``predictor`` itself if it propagates videos; else a ``SegGPTVideoPredictor`` around the image predictor."""
    if hasattr(predictor, "propagate"):
        return predictor
    from seggpt.video import SegGPTVideoPredictor

    return SegGPTVideoPredictor(predictor=predictor, context=DEFAULT_CONTEXT if context is None else context)


def score_sequence(data: Path, seq: str, vp: Any) -> list[ObjectScores]:
    """Propagate one sequence from its first annotation and score frames 1..T-2 of every object."""
    frames = sorted((data / "JPEGImages" / "480p" / seq).glob("*.jpg"))
    anns = {p.stem: p for p in (data / "Annotations" / "480p" / seq).glob("*.png")}
    if len(frames) < 3:
        raise layout_error(f"sequence {seq!r} has {len(frames)} frames; DAVIS scores frames 1..T-2", LAYOUT)
    missing = [f.stem for f in frames if f.stem not in anns]
    if missing:
        raise layout_error(f"sequence {seq!r}: no annotation for frames {missing[:5]}", LAYOUT)
    first = read_raw_mask(anns[frames[0].stem])
    if first.ndim != 2:
        raise layout_error(f"{anns[frames[0].stem]} is a colour image; DAVIS annotations are palette PNGs", LAYOUT)
    first = np.where(first == IGNORE, 0, first).astype(np.int64)
    num_objects = int(first.max())
    if num_objects == 0:
        raise layout_error(f"the first annotation of {seq!r} has no object", LAYOUT)
    j: dict[int, list[float]] = {o: [] for o in range(1, num_objects + 1)}
    f: dict[int, list[float]] = {o: [] for o in range(1, num_objects + 1)}
    last = len(frames) - 1
    for t, labels in vp.propagate([str(p) for p in frames], first_masks=first):
        stop_point()  # a stop drops this sequence (done again on resume) rather than waiting for its last frame
        if t == 0 or t == last:
            continue
        gt = read_raw_mask(anns[frames[t].stem])
        labels = np.asarray(labels)
        if labels.shape != gt.shape:
            raise ValueError(f"{seq} frame {t}: prediction {labels.shape} vs annotation {gt.shape}")
        void = gt == IGNORE
        for o in j:
            p, g = labels == o, gt == o
            j[o].append(davis_j(p, g, void))
            f[o].append(davis_f(p, g, void))
    return [ObjectScores(seq, o, tuple(j[o]), tuple(f[o])) for o in j]


def collect(predictor: Any, data: Path, options: EvalOptions, shard: Shard, progress: bool) -> dict:
    seqs = sequences(data, options)
    vp = video_predictor(predictor, options.context_frames)
    objects: list = []
    mine = units(shard.take(seqs), objects)  # resumable: see seggpt.eval.resume
    it: Any = mine
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(mine, desc="sequences", unit="seq", disable=None)
    for seq in it:
        objects += score_sequence(data, seq, vp)
    return {"objects": objects, "sequences": seqs}


def summarize(states: list[Any], options: EvalOptions) -> BenchmarkResult:
    order = {s: i for i, s in enumerate(states[0]["sequences"])}
    objects = sorted((o for s in states for o in s["objects"]), key=lambda o: (order[o.sequence], o.object_id))
    table = davis_summary(objects)
    per_sequence = table.pop("per_sequence")
    metrics = {k: 100 * v for k, v in table.items()}
    metrics = {"J&F-Mean": metrics.pop("J&F-Mean"), **metrics}
    details = {
        "objects": len(objects),
        "per_sequence": {s: {k: 100 * v for k, v in d.items()} for s, d in per_sequence.items()},
    }
    context = DEFAULT_CONTEXT if options.context_frames is None else options.context_frames
    protocol = {
        "sequences": len(states[0]["sequences"]),
        "resolution": "480p",
        "scored_frames": "1..T-2 (first and last excluded)",
        "boundary_tolerance": "ceil(0.008 * image diagonal)",
        "context_frames": context,
    }
    paper = dict(PAPER) if context == 8 else {}
    return BenchmarkResult(NAME, metrics, details, protocol, paper)


BENCHMARK = register(
    Benchmark(
        NAME,
        "DAVIS-2017 semi-supervised video object segmentation (val, J&F)",
        LAYOUT,
        collect,
        summarize,
        check=lambda data, options: sequences(data, options) and None,
        video=True,
    )
)
