"""Command-line options shared by several ``seggpt`` commands."""

from __future__ import annotations

import argparse


def add_image_size(p: argparse.ArgumentParser) -> None:
    """``--image-size PX``: the side each image is resized to for the model (see ``seggpt.load_model``)."""
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="PX",
        help="side each image is resized to for the model, a multiple of its patch size "
        "(default: the size the checkpoint was trained at; the embedded model: 96)",
    )
