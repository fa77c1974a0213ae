"""SynthContext few-shot benchmark: held-out shapes and textures, the FSS-1000 protocol, generated on the fly.

Each episode segments one *novel* category (a shape or a texture that training never shows, see
``seggpt.data.synth.HELD_OUT_SHAPES`` / ``HELD_OUT_TEXTURES``) in a query scene from ``shots`` example
scenes. Distractors differ in the category's attribute but often share the others, so one example can be
ambiguous and more examples resolve it. Scoring is the binary few-shot protocol of SEGGPT.md section 7:
per-class foreground/background intersections and unions accumulated over episodes; mIoU = mean over the
categories of the foreground IoU; FB-IoU = mean of the background and foreground IoU over everything.

Episodes are seeded per image: the query of episode ``i`` comes from ``default_rng([seed, i, 0])`` and its
``j``-th example from ``default_rng([seed, i, j + 1])``. So the episodes are the same on every machine and
every rank, and the k-shot examples of an episode are its (k-1)-shot examples plus one: mIoU against k
compares like with like. Categories take turns (episode ``i`` is category ``i mod C``).

Usage: ``seggpt eval synthcontext --shots K --ensemble feature|spatial --episodes N --seed S --json OUT``
(no data folder needed). Options in ``EvalOptions.extra``: ``size`` (image side, default 128), ``p_share``.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from seggpt.data.synth import (
    ATTRIBUTES,
    HELD_OUT_SHAPES,
    HELD_OUT_TEXTURES,
    category_image_scene,
)
from seggpt.eval.distributed import Shard
from seggpt.eval.episodes import Episode, fold_report, merge_fold_meters, run_fewshot
from seggpt.eval.metrics import FewShotMeter
from seggpt.eval.registry import Benchmark, BenchmarkResult, EvalOptions, register

NAME = "synthcontext"
SEED = 0
EPISODES = 600  # 100 per held-out category
IMAGE_SIZE = 128  # the embedded model's image size
P_SHARE = 0.5  # as in training: half the distractors copy the colour and/or texture (shape) of a positive
LAYOUT = "no data needed: episodes are generated from the seed (SynthContext held-out categories)"

# (attribute, value) per class id.
CATEGORIES: tuple[tuple[str, str], ...] = tuple(("shape", s) for s in HELD_OUT_SHAPES) + tuple(
    ("texture", t) for t in HELD_OUT_TEXTURES
)


def category_names() -> dict[int, str]:
    return {i: f"{a}={v}" for i, (a, v) in enumerate(CATEGORIES)}


def build_episodes(num_episodes: int, shots: int) -> list[Episode]:
    """Episode ``i``: category ``i mod C``, query key ``"i/q"``, support keys ``"i/s0" .. "i/s{shots-1}"``."""
    if num_episodes < 1 or shots < 1:
        raise ValueError(f"need episodes >= 1 and shots >= 1, got {num_episodes}, {shots}")
    return [
        Episode(i, i % len(CATEGORIES), f"{i}/q", tuple(f"{i}/s{j}" for j in range(shots))) for i in range(num_episodes)
    ]


def episode_scene(
    seed: int,
    index: int,
    stream: int,
    attribute: str,
    value: str,
    size: int = IMAGE_SIZE,
    p_share: float = P_SHARE,
    split: str = "eval",
) -> tuple:
    """Image ``stream`` of episode ``index`` (0 = the query, j + 1 = its j-th example), drawn from
    ``default_rng([seed, index, stream])``: what :func:`seggpt.data.synth.category_image_scene` returns."""
    rng = np.random.default_rng([seed, index, stream])
    return category_image_scene(rng, size, attribute, value, split=split, p_share=p_share)


class SynthEpisodeData:
    """Renders the images an episode key names, deterministically from (seed, episode, slot).

    ``run_fewshot`` asks for a key's image and mask separately; the few most recent renders are kept so each
    scene is drawn once.
    """

    def __init__(self, seed: int = SEED, size: int = IMAGE_SIZE, p_share: float = P_SHARE, cache: int = 64) -> None:
        self.seed = int(seed)
        self.size = int(size)
        self.p_share = float(p_share)
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_size = cache

    def item(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) uint8, mask (H, W) uint8 in {0, 1}) of ``"<episode>/q"`` or ``"<episode>/s<j>"``."""
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            ep, slot = key.split("/")
            index = int(ep)
            stream = 0 if slot == "q" else int(slot[1:]) + 1
        except ValueError:
            msg = f"bad SynthContext episode key {key!r}; expected '<episode>/q' or '<episode>/s<j>'"
            raise ValueError(msg) from None
        attribute, value = CATEGORIES[index % len(CATEGORIES)]
        out = episode_scene(self.seed, index, stream, attribute, value, self.size, self.p_share)[:2]
        self._cache[key] = out
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def image(self, key: str) -> np.ndarray:
        return self.item(key)[0]

    def mask(self, key: str, class_id: int) -> np.ndarray:
        return self.item(key)[1]


REFERENCES = ("every object", "reasoner")


def consistent_values(scene_objects: list, classes: list[int], inst: np.ndarray) -> list[tuple[str, str]]:
    """The (attribute, value) pairs an example allows: shared by every marked object it shows and by none of
    the unmarked objects it shows. Objects hidden entirely (occluded, off-canvas) say nothing."""
    shown = set(np.unique(inst).tolist()) - {0}
    pos = [o for j, o in enumerate(scene_objects) if j + 1 in shown and classes[j]]
    neg = [o for j, o in enumerate(scene_objects) if j + 1 in shown and not classes[j]]
    out = []
    for a in ATTRIBUTES:
        values = {o.attribute(a) for o in pos}
        if len(values) == 1:
            (v,) = values
            if all(o.attribute(a) != v for o in neg):
                out.append((a, v))
    return out


def reference_scores(
    num_episodes: int, shots: int, seed: int = SEED, size: int = IMAGE_SIZE, p_share: float = P_SHARE
) -> dict[str, dict]:
    """Two references on the benchmark's own episodes (the same seeds), computed from the scenes' ground truth.

    ``every object`` marks every object of the query: the score of a model that finds objects but cannot tell
    the category from the examples. ``reasoner`` sees every object's true attributes and keeps the
    (attribute, value) pairs all its examples allow (:func:`consistent_values`), then marks the query objects
    with one of them, drawn at random when several remain: the score of perfect perception, so the most the
    benchmark lets any model reach; below 100 only because a few examples can be ambiguous.

    Returns:
        ``{name: {"mIoU": .., "FB-IoU": .., "class_iou": {..}}}``, in percent.
    """
    if num_episodes < 1 or shots < 1:
        raise ValueError(f"need episodes >= 1 and shots >= 1, got {num_episodes}, {shots}")
    meters = {name: FewShotMeter(tuple(range(len(CATEGORIES)))) for name in REFERENCES}
    for ep in build_episodes(num_episodes, shots):
        attribute, value = CATEGORIES[ep.class_id]
        _, gt, scene, _, inst = episode_scene(seed, ep.index, 0, attribute, value, size, p_share)
        allowed: set[tuple[str, str]] | None = None
        for j in range(shots):
            _, _, s_scene, s_classes, s_inst = episode_scene(seed, ep.index, j + 1, attribute, value, size, p_share)
            ok = set(consistent_values(list(s_scene.objects), s_classes, s_inst))
            allowed = ok if allowed is None else allowed & ok
        every = (inst > 0).astype(np.uint8)
        meters["every object"].update(ep.class_id, every, gt)
        guess = np.zeros_like(gt)
        hypotheses = sorted(allowed or set())
        if hypotheses:
            a, v = hypotheses[int(np.random.default_rng([seed, ep.index, 1_000_003]).integers(len(hypotheses)))]
            for j, obj in enumerate(scene.objects):
                if obj.attribute(a) == v:
                    guess[inst == j + 1] = 1
        meters["reasoner"].update(ep.class_id, guess, gt)
    out = {}
    for name, m in meters.items():
        metrics, details = fold_report({0: m}, category_names())
        out[name] = {**metrics, "class_iou": details["folds"]["0"]["class_iou"]}
    return out


def _settings(options: EvalOptions) -> tuple[int, int, int, float]:
    seed = SEED if options.seed is None else int(options.seed)
    episodes = EPISODES if options.episodes is None else int(options.episodes)
    size = int(options.extra.get("size", IMAGE_SIZE))
    p_share = float(options.extra.get("p_share", P_SHARE))
    if size < 16:
        raise ValueError(f"SynthContext image size must be >= 16, got {size}")
    if not 0.0 <= p_share <= 1.0:
        raise ValueError(f"p_share must be in [0, 1], got {p_share}")
    return seed, episodes, size, p_share


def collect(predictor: Any, data: Path | None, options: EvalOptions, shard: Shard, progress: bool) -> dict:
    """This shard's per-category counts. ``data`` is ignored (the benchmark is generated)."""
    seed, num_episodes, size, p_share = _settings(options)
    episodes = build_episodes(num_episodes, options.shots)
    if options.limit:
        episodes = episodes[: options.limit]
    reader = SynthEpisodeData(seed, size, p_share)
    meter = run_fewshot(
        predictor, episodes, reader, range(len(CATEGORIES)), options.shots, options.ensemble, shard, progress
    )
    return {"meters": {0: meter}, "names": category_names()}


def summarize(states: list[Any], options: EvalOptions) -> BenchmarkResult:
    merged = merge_fold_meters([s["meters"] for s in states])
    metrics, details = fold_report(merged, states[0]["names"])
    fold = details["folds"]["0"]
    seed, num_episodes, size, p_share = _settings(options)
    protocol = {
        "episodes": fold["episodes"],
        "shots": options.shots,
        "ensemble": options.ensemble or "feature",
        "seed": seed,
        "image_size": size,
        "p_share": p_share,
        "categories": list(category_names().values()),
        "split": "held-out shapes and textures (never seen in training)",
    }
    if options.limit:
        protocol["limit"] = options.limit
    return BenchmarkResult(NAME, metrics, {"class_iou": fold["class_iou"], "episodes": fold["episodes"]}, protocol)


BENCHMARK = register(
    Benchmark(
        NAME, "SynthContext few-shot on held-out shapes and textures (generated, no data)", LAYOUT, collect, summarize
    )
)
