"""Benchmarks by name: ``seggpt eval NAME`` looks the name up here.

A benchmark is two functions. ``collect(predictor, data, options, shard, progress)`` evaluates this rank's
share of the work and returns a picklable state made of sums or per-item records; ``summarize(states,
options)`` merges the states of all ranks (in rank order) into a :class:`BenchmarkResult`. Splitting the two
is what makes sharded runs equal to single-process ones.

Adding a benchmark: write a module that builds a :class:`Benchmark` and calls :func:`register` at import,
and list the module in ``BUILTIN_MODULES`` (or import it before calling :func:`get`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seggpt.eval.distributed import Shard

# Benchmark name -> module that registers it, imported on first use so that `seggpt eval --help` stays fast
# and a module whose optional dependency is missing only breaks its own benchmark.
BUILTIN_MODULES: dict[str, str] = {
    "fss1000": "seggpt.eval.fss",
    "coco20i": "seggpt.eval.coco20i",
    "pascal5i": "seggpt.eval.pascal5i",
    "ade20k": "seggpt.eval.ade20k",
    "davis2017": "seggpt.eval.davis",
    "clinicdb": "seggpt.eval.folder",
    "folder": "seggpt.eval.folder",
    "camvid": "seggpt.eval.camvid",
    # Issue 5: the procedural in-context benchmark registers itself from this module when it exists.
    "synthcontext": "seggpt.eval.synthcontext",
}

ENSEMBLES = ("feature", "spatial", "none")


@dataclass
class EvalOptions:
    """Options shared by the runners; each runner reads the ones its protocol has.

    Attributes:
        shots: support examples per query (k).
        ensemble: how k > 1 examples are combined: "feature" | "spatial" | "none" (None: the predictor's
            default, the feature ensemble).
        seed: episode / example sampling seed (None: the benchmark's published seed).
        episodes: episodes per fold (None: the published number).
        folds: folds to run (None: all four), COCO-20i / PASCAL-5i.
        split_file: a class or image list replacing the default split (FSS-1000: its official test split).
        seeds: ADE20K example-sampling seeds (None: 1000, 2000, 3000, 4000).
        context_frames: DAVIS: frames in the video predictor's feature ensemble (None: its default).
        batch_size: targets per forward where the protocol allows batching.
        limit: evaluate only the first N work items (a smoke run; the report says it is not the protocol).
        prompt_file: a learned prompt (``seggpt tune``) used as the example for every target instead of sampled
            examples: ADE20K's tuned-prompt protocol, and the folder benchmarks.
        extra: runner-specific options (e.g. ``{"prompts": [...]}`` for the folder benchmark).
    """

    shots: int = 1
    ensemble: str | None = None
    seed: int | None = None
    episodes: int | None = None
    folds: tuple[int, ...] | None = None
    split_file: Path | None = None
    seeds: tuple[int, ...] | None = None
    context_frames: int | None = None
    batch_size: int = 8
    limit: int | None = None
    prompt_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shots < 1:
            raise ValueError(f"--shots must be >= 1, got {self.shots}")
        if self.ensemble is not None and self.ensemble not in ENSEMBLES:
            raise ValueError(f"--ensemble must be one of {ENSEMBLES}, got {self.ensemble!r}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.episodes is not None and self.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {self.episodes}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["split_file"] = str(self.split_file) if self.split_file else None
        d["prompt_file"] = str(self.prompt_file) if self.prompt_file else None
        return d


@dataclass
class BenchmarkResult:
    """What a benchmark reports.

    Attributes:
        benchmark: the registry name.
        metrics: headline numbers in percent (e.g. {"mIoU": 85.6, "FB-IoU": 90.1}).
        details: per fold / class / seed / sequence breakdowns.
        protocol: the protocol as run (shots, ensemble, seeds, episode counts, splits).
        paper: the published numbers for the same protocol, percent, where the paper gives them.
    """

    benchmark: str
    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, float] = field(default_factory=dict)


Collect = Callable[[Any, Path, EvalOptions, Shard, bool], Any]
Summarize = Callable[[list[Any], EvalOptions], BenchmarkResult]


@dataclass(frozen=True)
class Benchmark:
    """A named benchmark.

    Attributes:
        name: the ``seggpt eval`` name.
        help: one line for ``--help``.
        layout: the expected folder layout, quoted in errors about missing or malformed data.
        collect: evaluates one shard; see the module docstring.
        summarize: merges the shards' states into the result.
        check: optional cheap validation of the data folder (raises with the expected layout), run by the CLI
            before it loads the model.
        video: whether it segments video (the CLI then loads the model at its video size, as ``seggpt video``).
    """

    name: str
    help: str
    layout: str
    collect: Collect
    summarize: Summarize
    check: Callable[[Path | None, EvalOptions], None] | None = None
    video: bool = False


_REGISTRY: dict[str, Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    """Make ``benchmark`` available under its name (re-registering a name replaces it)."""
    _REGISTRY[benchmark.name] = benchmark
    return benchmark


def names() -> list[str]:
    """Every benchmark name that can be asked for (built in or registered)."""
    return sorted(set(BUILTIN_MODULES) | set(_REGISTRY))


def get(name: str) -> Benchmark:
    """The benchmark called ``name``, importing its module on first use."""
    if name not in _REGISTRY and name in BUILTIN_MODULES:
        try:
            importlib.import_module(BUILTIN_MODULES[name])
        except ModuleNotFoundError as e:
            if e.name == BUILTIN_MODULES[name]:
                raise ValueError(f"benchmark {name!r} is not available in this version of seggpt") from None
            raise
    if name not in _REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}; choose one of: {', '.join(names())}")
    return _REGISTRY[name]


def run_local(
    benchmark: Benchmark | str,
    predictor: Any,
    data: str | Path | None,
    options: EvalOptions | None = None,
    shard: Shard | None = None,
    progress: bool = False,
) -> Any:
    """This rank's state (for tests and custom launchers); merge states with ``benchmark.summarize``."""
    b = get(benchmark) if isinstance(benchmark, str) else benchmark
    path = Path(data) if data is not None else None
    return b.collect(predictor, path, options or EvalOptions(), shard or Shard(), progress)


def evaluate(
    benchmark: Benchmark | str,
    predictor: Any,
    data: str | Path | None,
    options: EvalOptions | None = None,
    progress: bool = False,
) -> BenchmarkResult:
    """Run a benchmark in this process and return its result."""
    b = get(benchmark) if isinstance(benchmark, str) else benchmark
    opts = options or EvalOptions()
    return b.summarize([run_local(b, predictor, data, opts, Shard(), progress)], opts)
