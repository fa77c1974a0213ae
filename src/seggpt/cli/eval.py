"""``seggpt eval BENCHMARK --data DIR [--weights W] [--shots K] [--ensemble E] --json OUT``.

Runs one of the paper's benchmarks with its published protocol and writes OUT (JSON) and OUT.md (a markdown
table with the paper's numbers beside). The work done is kept in OUT.state while it runs (written atomically
every few seconds, on Ctrl-C and when a file cannot be read); ``--resume`` continues from it and reports what
an uninterrupted run would. Under ``torchrun --nproc_per_node N seggpt eval ...`` the work is
sharded across the N processes and gathered on rank 0, which writes the report; the numbers equal a
single-process run. (``torchrun`` takes ``-m seggpt.cli`` or the path of the ``seggpt`` script.)
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from seggpt.cli.options import (
    add_device,
    add_image_size,
    add_max_megapixels,
    add_test_views,
    add_threshold,
    device_and_dtype,
)

log = logging.getLogger(__name__)

# Kept here (not imported from seggpt.eval) so `seggpt --help` does not import the runners.
BENCHMARKS = ["fss1000", "coco20i", "pascal5i", "ade20k", "davis2017", "clinicdb", "folder", "camvid", "synthcontext"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="reproduce the paper's benchmarks (FSS-1000, COCO-20i, PASCAL-5i, ADE20K, DAVIS-17, ...)",
        description=(
            "Evaluate SegGPT on a benchmark with its published protocol. Writes a JSON report and a markdown "
            "table (OUT with .md). Shard with: torchrun --nproc_per_node N -m seggpt.cli eval ..."
        ),
    )
    p.add_argument("benchmark", choices=BENCHMARKS, help="which benchmark")
    p.add_argument("--data", type=Path, default=None, help="the dataset folder, in its published layout")
    p.add_argument(
        "--weights",
        default=None,
        help="checkpoint: a path (official .pth, HF folder, .safetensors) or a Hugging Face hub id "
        "(BAAI/seggpt-vit-large, BAAI/SegGPT, OWNER/REPO/FILE, each with an optional @REVISION); default: embedded",
    )
    add_image_size(p, aspect=True)
    add_threshold(p)
    add_test_views(p)
    p.add_argument("--shots", type=int, default=1, help="examples per query (k); default 1")
    p.add_argument(
        "--ensemble", choices=["feature", "spatial", "none"], default=None, help="how k > 1 examples combine"
    )
    p.add_argument("--seed", type=int, default=None, help="episode / example seed (default: the published one)")
    p.add_argument("--episodes", type=int, default=None, help="episodes per fold (default: the published number)")
    p.add_argument("--fold", type=int, action="append", default=None, help="fold to run (repeatable; default all)")
    p.add_argument("--split-file", type=Path, default=None, help="class / image / sequence list replacing the default")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="ADE20K example seeds (default 1000..4000)")
    p.add_argument("--context-frames", type=int, default=None, help="DAVIS: recent frames in the feature ensemble")
    p.add_argument("--prompts", nargs="+", default=None, help="folder/clinicdb: stems of the example pairs")
    p.add_argument(
        "--prompt-file", type=Path, default=None, help="a learned prompt (seggpt tune): ade20k tuned row, folders"
    )
    p.add_argument(
        "--limit", type=int, default=None, help="only the first N work items (a smoke run, not the protocol)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="targets per forward where the protocol allows")
    add_device(p)
    p.add_argument("--json", required=True, type=Path, dest="json_out", help="report path (markdown beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report (and start afresh)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its state file (OUT.state), doing only the work not done yet",
    )
    add_max_megapixels(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seggpt.eval import distributed as D
    from seggpt.eval.registry import EvalOptions, get
    from seggpt.eval.report import markdown_path, write_report
    from seggpt.eval.resume import EvalStopped, Journal

    device, dtype = device_and_dtype(args)
    shard = D.shard_from_env()
    if shard.is_main and not args.overwrite:
        for p in (args.json_out, markdown_path(args.json_out)):
            if p.exists():
                raise FileExistsError(f"{p} exists; pass --overwrite to replace it")
    options = EvalOptions(
        shots=args.shots,
        ensemble=args.ensemble,
        seed=args.seed,
        episodes=args.episodes,
        folds=tuple(args.fold) if args.fold else None,
        split_file=args.split_file,
        seeds=tuple(args.seeds) if args.seeds else None,
        context_frames=args.context_frames,
        batch_size=args.batch_size,
        limit=args.limit,
        prompt_file=args.prompt_file,
        extra={"prompts": args.prompts} if args.prompts else {},
    )
    state_path = state_file(args.json_out, shard.rank)
    if state_path.exists() and not args.resume and not args.overwrite:
        raise FileExistsError(
            f"an evaluation state {state_path} exists from an interrupted run: pass --resume to continue it, or "
            "--overwrite to start afresh"
        )
    benchmark = get(args.benchmark)
    if benchmark.video and args.scales is not None and len(args.scales) > 1:
        raise ValueError(f"--scales is for still images; {args.benchmark} is video, which runs at one size: drop it")
    if benchmark.check is not None:
        benchmark.check(args.data, options)  # a wrong folder fails before the model loads
    if device.type == "cuda" and device.index is None and shard.world_size > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', shard.rank))}"  # one GPU per rank

    from seggpt.predictor import SegGPTPredictor

    predictor = SegGPTPredictor(
        model=args.weights,
        device=device,
        dtype=dtype,
        image_size=args.image_size,
        video=benchmark.video,
        threshold=args.threshold,
        scales=args.scales,
        flip=args.flip,
        keep_aspect=args.keep_aspect,
    )
    journal = Journal(state_path, _fingerprint(args, options, predictor, shard), resume=args.resume)
    if journal.resumed:
        print(f"resuming from {state_path}: {journal.resumed} work unit(s) done")
    initialised = D.init_distributed(shard)
    try:
        start = time.perf_counter()
        try:
            state = _collect(benchmark, predictor, args, options, shard, journal, start)
        except EvalStopped as e:
            print(f"stopped after {e.done} work unit(s) with the state in {e.path}; run the same command with --resume")
            return 130
        states = D.gather_to_main(state, shard)
        elapsed = journal.elapsed + time.perf_counter() - start
        if shard.is_main:
            result = benchmark.summarize(states, options)
            run_info = {
                "weights": args.weights or "embedded",
                **_reading(predictor),
                "data": str(args.data),
                "device": str(device),
                "dtype": str(dtype).removeprefix("torch."),
                "world_size": shard.world_size,
                "seconds": round(elapsed, 1),
                "limit": args.limit,
            }
            jp, mp = write_report(result, args.json_out, run_info, overwrite=args.overwrite)
            summary = ", ".join(f"{k} {v:.1f}" for k, v in result.metrics.items() if isinstance(v, float))
            print(f"{args.benchmark}: {summary}")
            print(f"wrote {jp} and {mp}")
        D.barrier(shard)
        state_path.unlink(missing_ok=True)  # the report is written: it is the result
    finally:
        D.shutdown(initialised)
    return 0


def state_file(report: Path, rank: int = 0) -> Path:
    """Where an evaluation keeps its work done: beside the report (one file per rank when sharded)."""
    return report.with_name(report.name + (".state" if rank == 0 else f".rank{rank}.state"))


def _reading(predictor) -> dict:
    """How the predictor reads the images, as the report records it and a resumed run must repeat it."""
    return {
        "image_size": list(predictor.config.image_size),
        "threshold": predictor.threshold,
        "scales": list(predictor.scales),
        "flip": predictor.flip,
        # Only when asked: a square reading keeps the fingerprint of the versions before the option, which resume.
        **({"keep_aspect": True} if predictor.keep_aspect else {}),
    }


def _fingerprint(args: argparse.Namespace, options, predictor, shard) -> dict:
    """What must be equal for a state file to be resumed: the benchmark as run, the model and the shard."""
    from seggpt.tuning import model_fingerprint

    return {
        "benchmark": args.benchmark,
        "options": options.to_dict(),
        "data": str(Path(args.data).resolve()) if args.data else None,
        "model": model_fingerprint(predictor.model),
        **_reading(predictor),
        "dtype": str(predictor.dtype),
        "device": predictor.device.type,
        "shard": [shard.rank, shard.world_size],
    }


def _collect(benchmark, predictor, args, options, shard, journal, start: float):
    """``benchmark.collect`` recording into ``journal``: Ctrl-C stops after the current unit with the journal
    written (EvalStopped); any other failure writes it too, and names it in the error."""
    from seggpt.eval.resume import EvalStopped, activate
    from seggpt.stopping import StopRequest

    previous = activate(journal)
    try:
        with StopRequest("stopping after this work unit (a video at its next frame), keeping the work done") as stop:
            journal.stop = stop
            return benchmark.collect(predictor, args.data, options, shard, shard.is_main and not args.no_progress)
    except EvalStopped:
        raise
    except (ValueError, FileNotFoundError) as e:
        if not journal.done:
            raise
        journal.save(time.perf_counter() - start)
        kind = FileNotFoundError if isinstance(e, FileNotFoundError) else ValueError
        raise kind(
            f"{e} ({journal.done} work unit(s) done are kept in {journal.path}: fix this and run the same command "
            "with --resume)"
        ) from None
    except BaseException:  # a second Ctrl-C, a crash: keep the work done
        if journal.done:
            journal.save(time.perf_counter() - start)
        raise
    finally:
        journal.stop = None
        activate(previous)
