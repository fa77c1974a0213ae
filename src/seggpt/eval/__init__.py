"""Evaluation: the paper's metrics and benchmarks with their published protocols.

    >>> from seggpt.eval import EvalOptions, evaluate
    >>> from seggpt.predictor import SegGPTPredictor
    >>> result = evaluate("fss1000", SegGPTPredictor("seggpt_vit_large.pth"), "data/FSS-1000")
    >>> result.metrics["mIoU"]

``seggpt eval NAME --data DIR --json OUT`` does the same from the shell, sharded under ``torchrun``.
"""

from seggpt.eval.distributed import Shard
from seggpt.eval.episodes import Episode, EpisodeData, predict_binary, run_fewshot, sample_episodes
from seggpt.eval.metrics import FewShotMeter, PQMeter, SemanticMeter, davis_f, davis_j, davis_statistics
from seggpt.eval.registry import Benchmark, BenchmarkResult, EvalOptions, evaluate, get, names, register, run_local

__all__ = [
    "Benchmark",
    "BenchmarkResult",
    "Episode",
    "EpisodeData",
    "EvalOptions",
    "FewShotMeter",
    "PQMeter",
    "SemanticMeter",
    "Shard",
    "davis_f",
    "davis_j",
    "davis_statistics",
    "evaluate",
    "get",
    "names",
    "predict_binary",
    "register",
    "run_fewshot",
    "run_local",
    "sample_episodes",
]
