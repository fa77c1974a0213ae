"""The ``seggpt`` command. Each subcommand lives in its own module under ``seggpt.cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``func``; this file only dispatches.

The CLI owns logging format and progress bars; it only calls the public library API.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Subcommand modules, in the order `seggpt --help` lists them.
COMMANDS = ["segment", "video", "train", "tune", "eval", "convert", "app", "demo"]


def build_parser() -> argparse.ArgumentParser:
    from seggpt import __version__

    parser = argparse.ArgumentParser(
        prog="seggpt",
        description="SegGPT: segment anything shown by example images and masks.",
    )
    parser.add_argument("--version", action="version", version=f"seggpt {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"seggpt.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"seggpt.cli.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # argparse ends a positional list at the first option: `seggpt train CONFIG --no-progress steps=10` would refuse
    # steps=10. A command whose last positional is a list names it (set_defaults(trailing=...)) and gets the words
    # after its options too; anything else left over is refused as argparse refuses it.
    args, extra = parser.parse_known_args(argv)
    trailing = getattr(args, "trailing", None)
    if extra and trailing and not any(word.startswith("-") for word in extra):
        getattr(args, trailing).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import seggpt.io

    limit = seggpt.io.MAX_PIXELS
    try:
        _apply_pixel_limit(args)
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        # User errors: one clear line, no traceback (use -vv for one).
        if args.verbose >= 2:
            raise
        print(f"seggpt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        seggpt.io.MAX_PIXELS = limit  # the command's --max-megapixels ends with it


def _apply_pixel_limit(args: argparse.Namespace) -> None:
    """``--max-megapixels`` (any command that has it) becomes the limit on image files while the command runs."""
    import seggpt.io

    mp = getattr(args, "max_megapixels", None)
    if mp is not None and not mp > 0:
        raise ValueError(f"--max-megapixels must be positive, got {mp}")
    if mp is not None:
        seggpt.io.MAX_PIXELS = int(mp * 1e6)


if __name__ == "__main__":
    sys.exit(main())
