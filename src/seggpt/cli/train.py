"""``seggpt train CONFIG [key=value ...]``: train or fine-tune SegGPT; also under ``torchrun --nproc_per_node N``."""

from __future__ import annotations

import argparse
import os

from seggpt.cli.options import add_max_megapixels


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a SegGPT model from a YAML config",
        description=(
            "Train SegGPT on a mixture of datasets. CONFIG is a YAML file (see configs/); key=value pairs override "
            "it with dotted keys, e.g. optim.lr=3e-4 steps=2000 data.sources.0.weight=2. Run the same command "
            "under `torchrun --nproc_per_node N` for data-parallel training (gloo on CPU, nccl on GPU). "
            "A run resumes from the newest checkpoint in its run_dir. Ctrl-C (or SIGTERM) stops it after the "
            "current step with a checkpoint (exit code 130); a second Ctrl-C stops at once."
        ),
    )
    p.add_argument("config", help="YAML training config")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--time-limit", type=float, default=None, metavar="MIN", help="stop with a checkpoint after MIN minutes"
    )
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="STEP",
        help="stop with a checkpoint after optimiser step STEP, on the full run's schedule (one stage of a recipe "
        "that continues from checkpoints/step_STEP.pt)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_max_megapixels(p)
    p.set_defaults(func=run, trailing="overrides")


def run(args: argparse.Namespace) -> int:
    import yaml

    from seggpt.train import load_config, train

    try:
        cfg = load_config(args.config, args.overrides)
    except yaml.YAMLError as e:  # the parser's message spans lines and points at a column: one line here
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(
            f"config file {args.config} is not valid YAML{where}: {getattr(e, 'problem', None) or e}; "
            "fix it (configs/tiny.yaml is a small example)"
        ) from None
    if args.stop_after is not None and not 1 <= args.stop_after <= cfg.steps:
        raise ValueError(f"--stop-after must be a step in [1, {cfg.steps}] (the config's steps), got {args.stop_after}")
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    rank = int(os.environ.get("RANK", "0"))
    result = train(
        cfg,
        progress=not args.no_progress and rank == 0,
        time_limit=None if args.time_limit is None else 60 * args.time_limit,
        stop_after=args.stop_after,
    )
    if rank == 0:
        if result.model_path is None:
            print(f"stopped at step {result.step} with a checkpoint in {result.run_dir}; run again to resume")
        else:
            loss = "n/a" if result.last_loss is None else f"{result.last_loss:.4f}"
            print(f"trained {result.step} steps (last loss {loss}); model: {result.model_path}")
    # Interrupted: the shell's code for Ctrl-C, so that a script or make running stages one after another stops.
    return 130 if result.interrupted else 0
