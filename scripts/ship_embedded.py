"""Ship a trained run as the embedded default model: fp16 native safetensors inside the package.

    python scripts/ship_embedded.py runs/embedded/model.safetensors [--overwrite]

Records the run's config and a short provenance note in the file's metadata. Refuses to exceed 25 MB.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from seggpt.checkpoint import EMBEDDED_WEIGHTS, load_model, save_native

LIMIT_MB = 25.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="the run's model.safetensors")
    ap.add_argument("--note", default="trained by `make train-default` (configs/embedded.yaml)")
    ap.add_argument("--overwrite", action="store_true", help="replace the shipped weights")
    args = ap.parse_args()
    model = load_model(args.model)
    run_dir = Path(args.model).parent
    meta = {"provenance": args.note}
    log = run_dir / "metrics.jsonl"
    if log.is_file():
        last = json.loads(log.read_text().strip().splitlines()[-1])
        meta["last_metrics"] = json.dumps(last)
    dst = save_native(model, EMBEDDED_WEIGHTS, dtype=torch.float16, overwrite=args.overwrite, extra_metadata=meta)
    size = dst.stat().st_size / 2**20
    print(f"wrote {dst} ({size:.1f} MB, fp16)")
    if size > LIMIT_MB:
        dst.unlink()
        print(f"error: {size:.1f} MB is over the {LIMIT_MB} MB limit for the embedded model", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
