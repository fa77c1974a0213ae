"""The run's metrics: one JSON object per logged step in ``metrics.jsonl``, and a PNG of the curves."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def append_metrics(path: str | os.PathLike, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
    return out


def truncate_metrics(path: str | os.PathLike, last_step: int) -> None:
    """Drop records after ``last_step`` (a resumed run re-logs those steps)."""
    p = Path(path)
    if not p.is_file():
        return
    keep = [r for r in read_metrics(p) if r.get("step", 0) <= last_step]
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    os.replace(tmp, p)


def plot_metrics(metrics_path: str | os.PathLike, png_path: str | os.PathLike) -> Path | None:
    """Loss (log scale) and learning rate against step, written atomically; None when there is nothing yet."""
    recs = [r for r in read_metrics(metrics_path) if "loss" in r]
    if not recs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in recs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot(steps, [r["loss"] for r in recs], lw=1)
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss (smooth L1)")
    ax1.grid(alpha=0.3)
    ax2.plot(steps, [r.get("lr", 0.0) for r in recs], lw=1, color="tab:orange")
    ax2.set_xlabel("step")
    ax2.set_ylabel("learning rate")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(png_path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
