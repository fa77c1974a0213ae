"""The embedded model's training curve: the loss of every stage end to end, and held-out one-shot mIoU.

    python scripts/plot_embedded.py runs/embedded runs/embedded_continue \
        --progress docs/results/embedded_progress.json --out docs/embedded_metrics.png

Each run folder's ``metrics.jsonl`` is drawn after the previous one (its steps shifted by the steps before it).
``--progress`` is a JSON list of ``{"step": global step, "mIoU": value}`` measured on checkpoints with
``seggpt eval synthcontext --shots 1`` (held-out categories); they are drawn on the second panel.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seggpt.io import atomic_write
from seggpt.train.metrics import read_metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders, in training order")
    ap.add_argument("--progress", default=None, help="JSON list of {step, mIoU} on held-out categories")
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    offset = 0
    for i, run in enumerate(args.runs):
        recs = [r for r in read_metrics(Path(run) / "metrics.jsonl") if "loss" in r]
        if not recs:
            raise SystemExit(f"error: {run}/metrics.jsonl has no logged steps")
        steps = [offset + r["step"] for r in recs]
        ax1.plot(steps, [r["loss"] for r in recs], lw=1, label=f"stage {i + 1}: {Path(run).name}")
        if i:
            ax1.axvline(offset, color="grey", lw=0.8, ls="--")
        offset = steps[-1]
    ax1.set_yscale("log")
    ax1.set_xlabel("step (batch 32)")
    ax1.set_ylabel("training loss (smooth L1, weighted)")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    if args.progress:
        points = sorted(json.loads(Path(args.progress).read_text()), key=lambda p: p["step"])
        ax2.plot([p["step"] for p in points], [p["mIoU"] for p in points], "o-", color="tab:green")
    ax2.set_xlim(0, offset)
    ax2.set_xlabel("step (batch 32)")
    ax2.set_ylabel("held-out one-shot mIoU")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(args.out, lambda tmp: fig.savefig(tmp, dpi=100), overwrite=True)
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
