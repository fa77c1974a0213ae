"""Seeded few-shot episodes and the few-shot evaluation loop any episode source can feed.

An episode is one query image of one class plus ``shots`` support images of the same class, each with a binary
mask of that class. Episodes are pure metadata (keys into a dataset) drawn from a seeded generator *per
episode* (``numpy.random.default_rng([seed, index])``), so episode ``i`` is the same whichever rank draws it,
and the k-shot supports of an episode start with its (k-1)-shot supports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from seggpt.eval.distributed import Shard
from seggpt.eval.metrics import IGNORE, FewShotMeter
from seggpt.eval.resume import units

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Episode:
    """One few-shot episode: keys into the dataset, resolved by an :class:`EpisodeData`.

    Attributes:
        index: position in the benchmark's episode list (and the seed of its generator).
        class_id: the class to segment.
        query: key of the query item.
        supports: keys of the support items, in sampling order (never the query).
    """

    index: int
    class_id: int
    query: str
    supports: tuple[str, ...]


class EpisodeData(Protocol):
    """Reads the items an episode names."""

    def image(self, key: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB image of an item."""
        ...

    def mask(self, key: str, class_id: int) -> np.ndarray:
        """(H, W) uint8 mask of ``class_id`` in the item: 0 background, 1 foreground, 255 ignored."""
        ...


def sample_episodes(
    queries: Sequence[tuple[str, int]],
    items_by_class: Mapping[int, Sequence[str]],
    shots: int,
    seed: int,
    num_episodes: int | None = None,
    order: str = "cycle",
) -> list[Episode]:
    """Draw episodes deterministically.

    Args:
        queries: candidate (item key, class) query pairs, in a fixed order.
        items_by_class: for each class, every item that contains it (the support pool; the query is excluded
            from its own episode's supports).
        shots: supports per episode (fewer when the pool is smaller, with a warning).
        seed: the benchmark seed; episode ``i`` uses ``default_rng([seed, i])``.
        num_episodes: how many episodes (None: one per query pair).
        order: how episode ``i`` picks its query. "cycle": ``queries[i % len(queries)]``, every pair in order,
            starting over when there are more episodes than pairs (FSS-1000, PASCAL-5i, as the standard HSNet
            evaluation does); "class-uniform": a class drawn uniformly among the classes of ``queries``, then
            one of its query items uniformly (COCO-20i, whose classes are very unequal in size).

    Returns:
        the episodes, ``index`` = position.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    if not queries:
        raise ValueError("no query candidates: the dataset split holds no image of the benchmark's classes")
    if order not in ("cycle", "class-uniform"):
        raise ValueError(f"order must be 'cycle' or 'class-uniform', got {order!r}")
    n = len(queries) if num_episodes is None else int(num_episodes)
    if n < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    by_class: dict[int, list[str]] = {}
    for key, cls in queries:
        by_class.setdefault(cls, []).append(key)
    classes = sorted(by_class)
    episodes = []
    short = 0
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        if order == "cycle":
            key, cls = queries[i % len(queries)]
        else:
            cls = classes[int(rng.integers(len(classes)))]
            key = by_class[cls][int(rng.integers(len(by_class[cls])))]
        pool = [k for k in items_by_class[cls] if k != key]
        if not pool:
            raise ValueError(f"class {cls} has no item other than the query {key!r} to serve as support")
        # A permutation (not choice) so that the first k supports do not depend on ``shots``.
        picks = rng.permutation(len(pool))[:shots]
        short += len(picks) < shots
        episodes.append(Episode(i, int(cls), key, tuple(pool[j] for j in picks)))
    if short:
        log.warning("%d episodes have fewer than %d supports (their class has too few items)", short, shots)
    return episodes


def _binary(mask: np.ndarray) -> np.ndarray:
    """Support mask for the prompt: foreground 1, everything else (background and ignored) 0."""
    m = np.asarray(mask)
    return ((m != 0) & (m != IGNORE)).astype(np.uint8)


def predict_binary(
    predictor: Any,
    support_images: Sequence[np.ndarray],
    support_masks: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    ensemble: str | None = None,
    batch_size: int = 8,
) -> list[np.ndarray]:
    """Binary segmentation of ``targets`` from binary support masks, through the predictor API.

    Args:
        predictor: a ``seggpt.predictor.SegGPTPredictor`` (or any object with ``set_prompts`` /
            ``predict_batch`` returning objects with ``labels``).
        support_images: P images (H, W, 3) uint8.
        support_masks: P masks (H, W): non-zero (except 255) is foreground.
        targets: images to segment.
        ensemble: the predictor's ensemble for P > 1 ("feature", "spatial", ...); ignored for P = 1.

    Returns:
        one (H, W) bool foreground map per target, at the target's size.
    """
    masks = [_binary(m) for m in support_masks]
    kwargs: dict[str, Any] = {"task": "semantic", "num_labels": 1}
    if len(masks) > 1 and ensemble is not None:
        kwargs["ensemble"] = ensemble
    predictor.set_prompts(list(support_images), masks, **kwargs)
    preds = predictor.predict_batch(list(targets), batch_size=batch_size)
    return [np.asarray(p.labels) != 0 for p in preds]


def run_fewshot(
    predictor: Any,
    episodes: Sequence[Episode],
    data: EpisodeData,
    class_ids: Sequence[int],
    shots: int | None = None,
    ensemble: str | None = None,
    shard: Shard | None = None,
    progress: bool = False,
    on_episode: Callable[[Episode, np.ndarray, np.ndarray], None] | None = None,
) -> FewShotMeter:
    """Evaluate episodes with the few-shot protocol; returns this shard's per-class counts.

    Args:
        predictor: see :func:`predict_binary`.
        episodes: every episode of the benchmark (this rank evaluates ``shard.take(episodes)``).
        data: resolves episode keys to images and masks.
        class_ids: the classes scored (one column each in the meter).
        shots: use the first ``shots`` supports of each episode (None: all).
        ensemble: how several supports are combined ("feature" | "spatial" | ...).
        shard: this rank's share.
        progress: show a tqdm bar.
        on_episode: optional callback(episode, prediction, ground truth), e.g. to save predictions.

    Returns:
        a :class:`FewShotMeter`; merge the ranks' meters, then read ``miou()`` / ``fb_iou()``.
    """
    meter = FewShotMeter(tuple(class_ids))
    mine = units((shard or Shard()).take(episodes), meter)  # resumable: see seggpt.eval.resume
    it: Any = mine
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(mine, desc="episodes", unit="ep", disable=None)
    for ep in it:
        sup = ep.supports if shots is None else ep.supports[:shots]
        if not sup:
            raise ValueError(f"episode {ep.index} has no supports")
        gt = data.mask(ep.query, ep.class_id)
        (pred,) = predict_binary(
            predictor,
            [data.image(k) for k in sup],
            [data.mask(k, ep.class_id) for k in sup],
            [data.image(ep.query)],
            ensemble=ensemble,
            batch_size=1,
        )
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and mask {gt.shape} of {ep.query!r} differ in size")
        meter.update(ep.class_id, pred, gt)
        if on_episode is not None:
            on_episode(ep, pred, gt)
    return meter


def merge_fold_meters(states: Sequence[Mapping[int, FewShotMeter]]) -> dict[int, FewShotMeter]:
    """Merge per-rank ``{fold: meter}`` states into one meter per fold (sums: exact)."""
    merged: dict[int, FewShotMeter] = {}
    for state in states:
        for fold, meter in state.items():
            merged[fold] = meter if fold not in merged else merged[fold].merge(meter)
    return dict(sorted(merged.items()))


def fold_report(merged: Mapping[int, FewShotMeter], class_names: Mapping[int, str] | None = None) -> tuple[dict, dict]:
    """Headline metrics (percent, mean over folds) and per-fold / per-class details."""
    details: dict[str, Any] = {"folds": {}}
    mious, fbs = [], []
    for fold, m in merged.items():
        iou = m.class_iou()[1]
        mious.append(m.miou())
        fbs.append(m.fb_iou())
        details["folds"][str(fold)] = {
            "mIoU": 100 * m.miou(),
            "FB-IoU": 100 * m.fb_iou(),
            "episodes": int(m.episodes.sum()),
            "class_iou": {
                (class_names or {}).get(c, str(c)): 100 * float(v) for c, v in zip(m.class_ids, iou, strict=True)
            },
        }
    metrics = {"mIoU": 100 * float(np.mean(mious)), "FB-IoU": 100 * float(np.mean(fbs))}
    return metrics, details
