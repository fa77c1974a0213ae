"""The embedded model's training curve: the loss of every stage end to end, and optionally a measured score.

    python scripts/plot_embedded.py runs/embedded runs/embedded_stage2 --labels "stage 1" "stage 2" \
        --out docs/embedded_training.png

Each run folder's ``metrics.jsonl`` is drawn after the previous one (its steps shifted by the steps before it);
``RUN:STEP`` draws a run only up to STEP (a stage stopped with ``--stop-after``). ``--start`` is the global step
where the first run given begins, when the stages before it are not drawn. ``--progress`` is a JSON list of
``{"step": global step, "mIoU": value}`` measured on checkpoints with ``seggpt eval synthcontext --shots 1``
(held-out categories), with an optional ``"stage"`` number that colours the point; they are drawn on the second
panel, over every stage.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seggpt.io import atomic_write
from seggpt.train.metrics import read_metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders in training order, RUN:STEP to stop a run's curve at STEP")
    ap.add_argument("--start", type=int, default=0, help="global step where the first run begins")
    ap.add_argument("--labels", nargs="+", default=None, help="a legend entry per run (default: the folder names)")
    ap.add_argument("--progress", default=None, help="JSON list of {step, mIoU} on held-out categories")
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.labels and len(args.labels) != len(args.runs):
        raise SystemExit(f"error: {len(args.labels)} --labels for {len(args.runs)} runs; give one per run")
    if args.progress:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    else:  # the loss alone
        fig, ax1 = plt.subplots(1, 1, figsize=(6.5, 3.6))
    offset = first = args.start
    for i, spec in enumerate(args.runs):
        run, _, last = spec.partition(":")
        if last and not last.isdigit():
            raise SystemExit(f"error: {spec}: expected RUN or RUN:STEP with a whole number of steps")
        recs = [r for r in read_metrics(Path(run) / "metrics.jsonl") if "loss" in r]
        recs = [r for r in recs if not last or r["step"] <= int(last)]
        if not recs:
            raise SystemExit(f"error: {run}/metrics.jsonl has no logged steps{' up to ' + last if last else ''}")
        steps = [offset + r["step"] for r in recs]
        label = args.labels[i] if args.labels else Path(run).name + (f" to step {last}" if last else "")
        ax1.plot(steps, [r["loss"] for r in recs], lw=1, label=label)
        if i:
            ax1.axvline(offset, color="grey", lw=0.8, ls="--")
        offset = int(last) + offset if last else steps[-1]
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss (smooth L1, weighted)")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    if args.progress:
        points = sorted(json.loads(Path(args.progress).read_text()), key=lambda p: p["step"])
        ax2.plot([p["step"] for p in points], [p["mIoU"] for p in points], "-", color="grey", lw=0.8)
        for stage in sorted({p.get("stage", 0) for p in points}):
            pts = [p for p in points if p.get("stage", 0) == stage]
            ax2.plot([p["step"] for p in pts], [p["mIoU"] for p in pts], "o", label=f"stage {stage}" if stage else None)
        if any("stage" in p for p in points):
            ax2.legend(fontsize=8)
    ax1.set_xlim(first, offset)
    if args.progress:
        ax2.set_xlim(0, offset)
        ax2.set_xlabel("step")
        ax2.set_ylabel("held-out one-shot mIoU")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(args.out, lambda tmp: fig.savefig(tmp, dpi=100), overwrite=True)
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
