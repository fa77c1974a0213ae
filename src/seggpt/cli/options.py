"""Command-line options shared by several ``seggpt`` commands."""

from __future__ import annotations

import argparse


def add_image_size(p: argparse.ArgumentParser, aspect: bool = False) -> None:
    """``--image-size PX`` or ``HxW``: the size each image is resized to for the model (see ``seggpt.load_model``);
    with ``aspect``, also ``--keep-aspect`` (``SegGPTPredictor(keep_aspect=True)``)."""
    p.add_argument(
        "--image-size",
        type=_image_size,
        default=None,
        metavar="PX",
        help="size each image is resized to for the model: a side (256) or height x width (288x512), multiples of "
        "its patch size (default: the size the checkpoint was trained at; the embedded model: 256 for images, "
        "288x512 for video, 512x288 for portrait video)",
    )
    if aspect:
        p.add_argument(
            "--keep-aspect",
            action="store_true",
            help="read each image at its own shape on as many pixels as the image size holds (a 4:3 photograph at "
            "224x288 for 256; default: every image square, as the released code reads)",
        )


def _image_size(text: str) -> int | tuple[int, int]:
    parts = text.lower().split("x")
    try:
        sizes = [int(v) for v in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: give a side in pixels (256) or HxW (288x512)")
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def add_threshold(p: argparse.ArgumentParser) -> None:
    """``--threshold T``: how far towards a label's colour a painted pixel must be to take it (the predictor's)."""
    p.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        metavar="T",
        help="a pixel takes a label when its painted colour is at least this fraction of the way from the "
        "background's colour to the label's, in (0, 1) (default: the model's own; 0.5, the nearest colour, for "
        "every checkpoint but the embedded model)",
    )


def _threshold(text: str) -> float:
    from seggpt.predictor import check_threshold  # the predictor's own rule; torch only once the option is given

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    try:
        return check_threshold(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_test_views(p: argparse.ArgumentParser) -> None:
    """``--scales 1,1.5`` and ``--flip``: test-time views averaged (``SegGPTPredictor(scales=, flip=)``)."""
    p.add_argument(
        "--scales",
        type=_scales,
        default=None,
        metavar="S,S",
        help="also paint each target at these sizes relative to the model's (1 must be among them), and average the "
        "answers: 1,1.5 finds more of what is small, at about 4 times the time (default: the model's size alone)",
    )
    p.add_argument(
        "--flip",
        action="store_true",
        help="also paint each target mirrored left to right and average the answers (twice the time)",
    )


def _scales(text: str) -> tuple[float, ...]:
    from seggpt.predictor import check_scales  # the predictor's own rule

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers: give sizes like 1,1.5") from None
    try:
        return check_scales(values)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_device(p: argparse.ArgumentParser, dtype: bool = True) -> None:
    """``--device D`` (default auto) and, with ``dtype``, ``--dtype T`` (default fp32): the same in every command.

    Checked by :func:`device_and_dtype` when the command runs, so a wrong name is one line (not argparse's usage
    text) and ``seggpt --help`` does not import torch."""
    p.add_argument(
        "--device",
        default="auto",
        metavar="D",
        help="where the model runs: auto (cuda, then mps, then cpu; default), cpu, cuda, cuda:1, mps",
    )
    if dtype:
        p.add_argument(
            "--dtype",
            default="fp32",
            metavar="T",
            help="model precision: fp32 (default), bf16, fp16 (also float32, bfloat16, float16), or int8 (CPU only: "
            "int8 linear layers, the rest in bf16 where the CPU has bf16 instructions, else fp32)",
        )


def device_and_dtype(args: argparse.Namespace):
    """(torch.device, torch.dtype) from ``--device`` / ``--dtype``; ValueError naming what is there if wrong."""
    from seggpt.devices import parse_dtype, resolve_device

    device = resolve_device(args.device)
    return device, parse_dtype(getattr(args, "dtype", "fp32"), device)


def add_max_megapixels(p: argparse.ArgumentParser, default: float | None = None) -> None:
    """``--max-megapixels MP``: the pixel limit of one image file (``seggpt.io.MAX_PIXELS``), applied by
    :func:`seggpt.cli.main` before the command runs."""
    from_io = "200, a 14000x14000 image" if default is None else f"{default:g}"
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=default,
        metavar="MP",
        help=f"largest image (width x height, in millions of pixels) read; larger files are refused with a clear "
        f"message, before decoding (default {from_io})",
    )
