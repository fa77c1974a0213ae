"""Average the weights of several checkpoints of one architecture into one model (stochastic weight averaging over
a run's checkpoints, or a "model soup" of runs from one start).

    python scripts/average_weights.py OUT.safetensors CKPT [CKPT ...] [--overwrite]

Each CKPT is anything ``seggpt.load_model`` reads (a run's ``model.safetensors``, a training checkpoint
``checkpoints/step_*.pt``, ...); every one must have the first one's architecture. Floating-point tensors are
averaged in float64 and stored in the first one's dtype; other tensors must be equal. OUT is a native fp32 file
with the first checkpoint's config, written atomically; an existing OUT is kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def average(paths: list[str]) -> torch.nn.Module:
    """The model of ``paths[0]`` holding the mean of every checkpoint's weights."""
    from seggpt.checkpoint import load_model

    first = load_model(paths[0])
    total = {k: v.double() if v.is_floating_point() else v.clone() for k, v in first.state_dict().items()}
    for path in paths[1:]:
        other = load_model(path)
        if other.config != first.config:
            raise ValueError(f"{path} has another architecture than {paths[0]}")
        for k, v in other.state_dict().items():
            if v.is_floating_point():
                total[k] += v.double()
            elif not torch.equal(v, total[k]):
                raise ValueError(f"{path}: {k} differs from {paths[0]}'s and cannot be averaged")
    ref = first.state_dict()
    first.load_state_dict({k: (v / len(paths)).to(ref[k].dtype) if ref[k].is_floating_point() else v
                           for k, v in total.items()})  # fmt: skip
    return first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the averaged model (.safetensors)")
    ap.add_argument("checkpoints", nargs="+", help="two or more checkpoints of one architecture")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = ap.parse_args(argv)
    from seggpt.checkpoint import save_native

    if len(args.checkpoints) < 2:
        print("error: give at least two checkpoints to average", file=sys.stderr)
        return 2
    if Path(args.out).exists() and not args.overwrite:
        print(f"error: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        model = average(args.checkpoints)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = save_native(model, args.out, dtype=torch.float32, overwrite=args.overwrite)
    print(f"wrote {out}: the mean of {len(args.checkpoints)} checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
