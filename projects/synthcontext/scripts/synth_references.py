"""What the SynthContext benchmark allows: a floor and a ceiling on its own episodes, from the ground truth.

    python projects/synthcontext/scripts/synth_references.py [--episodes 300] [--seed 0] [--shots 1 2 4 8 16]
        [--json OUT]

"every object" marks every object in the query (a model that finds objects but not the category scores
this); "reasoner" knows every object's true shape, texture and colour and keeps what all the examples agree on
(perfect perception: the most any model can reach). Same episodes as
``seggpt eval synthcontext --episodes N --seed S``, so the numbers sit beside a model's in one table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seggpt.eval.synthcontext import REFERENCES, reference_scores
from seggpt.io import atomic_write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--json", type=Path, help="write the numbers here (atomically)")
    args = ap.parse_args()
    rows = {k: reference_scores(args.episodes, k, seed=args.seed) for k in args.shots}
    print(f"SynthContext references, {args.episodes} episodes, seed {args.seed} (mIoU / FB-IoU)")
    print("| examples | " + " | ".join(REFERENCES) + " |")
    print("|---" * (len(REFERENCES) + 1) + "|")
    for k, r in rows.items():
        print(f"| {k} | " + " | ".join(f"{r[n]['mIoU']:.1f} / {r[n]['FB-IoU']:.1f}" for n in REFERENCES) + " |")
    if args.json:
        out = {"episodes": args.episodes, "seed": args.seed, "shots": {str(k): v for k, v in rows.items()}}
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(out, indent=2) + "\n"), overwrite=True)


if __name__ == "__main__":
    main()
