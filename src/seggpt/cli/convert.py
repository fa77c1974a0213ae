"""``seggpt convert SRC DST --to native|hf|official``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint between the official, Hugging Face and native formats",
        description="Convert a SegGPT checkpoint. Tensors are copied bit for bit, so round trips are exact.",
    )
    p.add_argument("src", help="official .pth, Hugging Face folder, or seggpt .safetensors")
    p.add_argument("dst", help="output file (native: .safetensors, official: .pth) or folder (hf)")
    p.add_argument("--to", required=True, choices=["native", "hf", "official"], help="output format")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seggpt.checkpoint import convert, read_checkpoint

    dst = convert(args.src, args.dst, to=args.to, overwrite=args.overwrite)
    sd, cfg = read_checkpoint(dst)
    n = sum(v.numel() for v in sd.values())
    print(f"wrote {dst} ({args.to}, {n / 1e6:.1f} M parameters, {cfg.depth} blocks of width {cfg.embed_dim})")
    return 0
