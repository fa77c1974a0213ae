"""``seggpt demo``: the main job on the embedded model, with bundled examples."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="segment the bundled examples with the embedded model")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seggpt.checkpoint import EMBEDDED_WEIGHTS

    if not EMBEDDED_WEIGHTS.is_file():
        print("no embedded model yet: this build ships without default weights (see the README's training section).")
        return 0
    raise NotImplementedError("the demo runs once the embedded model ships")
