"""The evaluation report: a JSON file and a markdown table beside it, both written atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from seggpt.eval.registry import BenchmarkResult
from seggpt.io import atomic_write


def _clean(x: Any) -> Any:
    """JSON-safe: NaN / inf -> None, numpy scalars -> Python, dict keys -> str."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def report_dict(result: BenchmarkResult, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the JSON file holds: metrics, paper numbers, protocol, details, and how it was run."""
    return _clean(
        {
            "benchmark": result.benchmark,
            "metrics": result.metrics,
            "paper": result.paper,
            "protocol": result.protocol,
            "run": run or {},
            "details": result.details,
        }
    )


def markdown_table(result: BenchmarkResult, run: dict[str, Any] | None = None) -> str:
    """A short markdown report: one row per headline metric, with the paper's number where there is one."""
    lines = [f"## {result.benchmark}", "", "| metric | this run | paper |", "|---|---:|---:|"]
    for k, v in result.metrics.items():
        paper = result.paper.get(k)
        ours = "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.1f}"
        lines.append(f"| {k} | {ours} | {'' if paper is None else f'{paper:.1f}'} |")
    lines.append("")
    proto = ", ".join(f"{k}: {v}" for k, v in result.protocol.items() if not isinstance(v, (list, dict)) or len(v) < 8)
    lines.append(f"Protocol: {proto}.")
    if run:
        lines.append("")
        lines.append("Run: " + ", ".join(f"{k}: {v}" for k, v in run.items() if v is not None) + ".")
    return "\n".join(lines) + "\n"


def markdown_path(json_path: str | os.PathLike) -> Path:
    """OUT.json -> OUT.md (OUT -> OUT.md when there is no .json suffix)."""
    p = Path(json_path)
    return p.with_suffix(".md") if p.suffix == ".json" else p.with_name(p.name + ".md")


def write_report(
    result: BenchmarkResult, json_path: str | os.PathLike, run: dict[str, Any] | None = None, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write OUT (JSON) and OUT with .md (markdown). Refuses to replace existing files unless ``overwrite``."""
    jp = Path(json_path)
    mp = markdown_path(jp)
    if not overwrite:
        for p in (jp, mp):
            if p.exists():
                raise FileExistsError(f"{p} exists; pass --overwrite to replace it")
    text = json.dumps(report_dict(result, run), indent=2) + "\n"
    atomic_write(jp, lambda tmp: Path(tmp).write_text(text), overwrite=True)
    atomic_write(mp, lambda tmp: Path(tmp).write_text(markdown_table(result, run)), overwrite=True)
    return jp, mp
