"""Segmentation metrics as the papers define them: pure numpy, no model, no I/O.

Every meter accumulates *sums* (pixel counts, match counts), never averages, so meters filled on different
ranks merge exactly by adding, and the merged result equals the single-process one bit for bit.

Definitions (``SEGGPT.md`` section 7):

* Few-shot (FSS-1000, COCO-20i, PASCAL-5i): per class, background and foreground intersection and union are
  summed over the episodes of that class. mIoU is the mean over classes of the foreground IoU, each
  ``intersection / max(union, 1)``; FB-IoU is the mean of the background and foreground IoU computed from the
  counts summed over all classes. Ignored pixels (255) count in neither.
* Semantic (ADE20K): per class intersection, union and ground-truth area summed over images; IoU = I / U,
  Acc = I / area; mIoU and mAcc average over the classes whose union (resp. area) is non-zero.
* DAVIS: J is the region IoU (1 when prediction and ground truth are both empty); F the boundary F-measure of
  one-pixel boundaries matched within ``ceil(0.008 * diagonal)`` pixels. Per object: mean, recall (fraction of
  frames above 0.5) and decay (mean of the first quarter of frames minus the last quarter, with the DAVIS
  toolkit's four overlapping bins).
* COCO panoptic PQ: segments match when they share a category and their IoU exceeds 0.5 (IoU with the
  prediction's pixels on void removed from the union); unmatched predictions lying mostly (> 0.5) on void or on
  a crowd region of their category are not false positives; unmatched crowd segments are not false negatives.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

IGNORE = 255


def _as_bool(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(bool)


def _check_same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: prediction shape {a.shape} differs from ground truth shape {b.shape}")


# Few-shot (binary, per class) ---------------------------------------------------------------------------


def binary_intersection_union(
    pred: np.ndarray, gt: np.ndarray, ignore_index: int | None = IGNORE
) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground intersection and union of one binary prediction.

    Args:
        pred: (H, W) prediction; non-zero is foreground.
        gt: (H, W) ground truth: 0 background, 1 (any non-zero but ``ignore_index``) foreground,
            ``ignore_index`` pixels excluded from every count.
        ignore_index: the label excluded from the counts, or None.

    Returns:
        intersection (2,) int64 and union (2,) int64, index 0 background, 1 foreground.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    _check_same_shape(pred, gt, "binary_intersection_union")
    valid = np.ones(gt.shape, bool) if ignore_index is None else gt != ignore_index
    p = pred.astype(bool) & valid
    g = gt.astype(bool) & valid
    inter_fg = np.count_nonzero(p & g)
    union_fg = np.count_nonzero(p | g)
    n_valid = np.count_nonzero(valid)
    # Background is the complement inside the valid pixels: I_bg = valid - |p or g|, U_bg = valid - |p and g|.
    inter_bg = n_valid - union_fg
    union_bg = n_valid - inter_fg
    return np.array([inter_bg, inter_fg], np.int64), np.array([union_bg, union_fg], np.int64)


@dataclass
class FewShotMeter:
    """Per-class background/foreground intersection and union, summed over episodes.

    Attributes:
        class_ids: the classes this meter scores (e.g. the 20 classes of a COCO-20i fold).
        intersection: (2, C) int64, row 0 background, row 1 foreground, column = position in ``class_ids``.
        union: (2, C) int64.
        episodes: (C,) int64, episodes seen per class.
    """

    class_ids: tuple[int, ...]
    intersection: np.ndarray = field(default=None)  # type: ignore[assignment]
    union: np.ndarray = field(default=None)  # type: ignore[assignment]
    episodes: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.class_ids = tuple(int(c) for c in self.class_ids)
        if len(set(self.class_ids)) != len(self.class_ids):
            raise ValueError(f"class_ids must be distinct, got {self.class_ids}")
        n = len(self.class_ids)
        if self.intersection is None:
            self.intersection = np.zeros((2, n), np.int64)
        if self.union is None:
            self.union = np.zeros((2, n), np.int64)
        if self.episodes is None:
            self.episodes = np.zeros(n, np.int64)
        self._index = {c: i for i, c in enumerate(self.class_ids)}

    def update(self, class_id: int, pred: np.ndarray, gt: np.ndarray, ignore_index: int | None = IGNORE) -> None:
        """Add one episode: ``pred`` and ``gt`` are (H, W) binary maps (gt may hold ``ignore_index``)."""
        if class_id not in self._index:
            raise ValueError(f"class {class_id} is not one of this meter's classes {self.class_ids}")
        inter, union = binary_intersection_union(pred, gt, ignore_index)
        i = self._index[class_id]
        self.intersection[:, i] += inter
        self.union[:, i] += union
        self.episodes[i] += 1

    def merge(self, other: FewShotMeter) -> FewShotMeter:
        """The sum of two meters over the same classes (exact: counts add)."""
        if other.class_ids != self.class_ids:
            raise ValueError("cannot merge meters over different classes")
        return FewShotMeter(
            self.class_ids,
            self.intersection + other.intersection,
            self.union + other.union,
            self.episodes + other.episodes,
        )

    def class_iou(self) -> np.ndarray:
        """(2, C) float64: background and foreground IoU per class, ``I / max(U, 1)``."""
        return self.intersection / np.maximum(self.union, 1)

    def miou(self) -> float:
        """Mean over classes of the foreground IoU, in [0, 1]."""
        return float(self.class_iou()[1].mean()) if self.class_ids else float("nan")

    def fb_iou(self) -> float:
        """Mean of the background and foreground IoU of the counts summed over all classes, in [0, 1]."""
        inter = self.intersection.sum(axis=1)
        union = self.union.sum(axis=1)
        return float((inter / np.maximum(union, 1)).mean())

    def to_dict(self) -> dict:
        return {
            "class_ids": list(self.class_ids),
            "intersection": self.intersection.tolist(),
            "union": self.union.tolist(),
            "episodes": self.episodes.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> FewShotMeter:
        return cls(
            tuple(d["class_ids"]),
            np.asarray(d["intersection"], np.int64).reshape(2, -1),
            np.asarray(d["union"], np.int64).reshape(2, -1),
            np.asarray(d["episodes"], np.int64),
        )


# Semantic segmentation ------------------------------------------------------------------------------------


@dataclass
class SemanticMeter:
    """Per-class intersection, union and ground-truth area summed over images (mIoU / mAcc).

    Attributes:
        num_classes: classes are labels 0..num_classes-1; any other label in the ground truth (such as 255) is
            ignored, in the prediction it counts as no class (it can only add to unions).
        intersection, union, area_gt, area_pred: (num_classes,) int64.
    """

    num_classes: int
    intersection: np.ndarray = field(default=None)  # type: ignore[assignment]
    union: np.ndarray = field(default=None)  # type: ignore[assignment]
    area_gt: np.ndarray = field(default=None)  # type: ignore[assignment]
    area_pred: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        for name in ("intersection", "union", "area_gt", "area_pred"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.num_classes, np.int64))

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: ``pred`` and ``gt`` (H, W) integer label maps."""
        pred = np.asarray(pred).astype(np.int64)
        gt = np.asarray(gt).astype(np.int64)
        _check_same_shape(pred, gt, "SemanticMeter.update")
        n = self.num_classes
        valid = (gt >= 0) & (gt < n)
        p = pred[valid]
        g = gt[valid]
        p_ok = (p >= 0) & (p < n)
        inter = np.bincount(g[p_ok & (p == g)], minlength=n)
        area_p = np.bincount(p[p_ok], minlength=n)
        area_g = np.bincount(g, minlength=n)
        self.add(inter, area_p, area_g)

    def add(self, intersection: np.ndarray, area_pred: np.ndarray, area_gt: np.ndarray) -> None:
        """Add raw per-class counts (used when classes are predicted one at a time)."""
        intersection = np.asarray(intersection, np.int64)
        area_pred = np.asarray(area_pred, np.int64)
        area_gt = np.asarray(area_gt, np.int64)
        self.intersection += intersection
        self.area_pred += area_pred
        self.area_gt += area_gt
        self.union += area_pred + area_gt - intersection

    def merge(self, other: SemanticMeter) -> SemanticMeter:
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge meters with different numbers of classes")
        return SemanticMeter(
            self.num_classes,
            self.intersection + other.intersection,
            self.union + other.union,
            self.area_gt + other.area_gt,
            self.area_pred + other.area_pred,
        )

    def class_iou(self) -> np.ndarray:
        """(num_classes,) IoU, NaN for classes absent from both prediction and ground truth."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.union > 0, self.intersection / np.maximum(self.union, 1), np.nan)

    def class_acc(self) -> np.ndarray:
        """(num_classes,) pixel accuracy (recall) per class, NaN for classes absent from the ground truth."""
        return np.where(self.area_gt > 0, self.intersection / np.maximum(self.area_gt, 1), np.nan)

    def miou(self) -> float:
        v = self.class_iou()
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    def macc(self) -> float:
        v = self.class_acc()
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    def pixel_acc(self) -> float:
        total = self.area_gt.sum()
        return float(self.intersection.sum() / total) if total else float("nan")

    def to_dict(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "intersection": self.intersection.tolist(),
            "union": self.union.tolist(),
            "area_gt": self.area_gt.tolist(),
            "area_pred": self.area_pred.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> SemanticMeter:
        return cls(
            int(d["num_classes"]),
            *(np.asarray(d[k], np.int64) for k in ("intersection", "union", "area_gt", "area_pred")),
        )


# DAVIS J and F --------------------------------------------------------------------------------------------


def davis_j(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J: IoU of two binary masks (H, W), 1.0 when both are empty; ``void`` pixels ignored."""
    p, g = _as_bool(pred), _as_bool(gt)
    _check_same_shape(p, g, "davis_j")
    if void is not None:
        keep = ~_as_bool(void)
        p, g = p & keep, g & keep
    union = np.count_nonzero(p | g)
    if union == 0:
        return 1.0
    return np.count_nonzero(p & g) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a binary mask (H, W) -> (H, W) bool.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour (neighbours
    outside the image do not count). This marks one pixel per transition, the side on the top/left, as the
    DAVIS benchmark's boundary maps do (not a two-pixel band of both sides).
    """
    m = _as_bool(mask)
    b = np.zeros_like(m)
    b[:, :-1] |= m[:, :-1] != m[:, 1:]
    b[:-1, :] |= m[:-1, :] != m[1:, :]
    b[:-1, :-1] |= m[:-1, :-1] != m[1:, 1:]
    return b


def disk_offsets(radius: int) -> list[tuple[int, int]]:
    """Integer offsets (dy, dx) with dy^2 + dx^2 <= radius^2 (a digital disk of that radius)."""
    r = int(radius)
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= r * r]


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of (H, W) bool by a digital disk of ``radius`` (pixels within distance radius)."""
    m = _as_bool(mask)
    r = int(radius)
    if r <= 0 or not m.any():
        return m.copy()
    h, w = m.shape
    # Row by row of the disk: a horizontal dilation of half-width floor(sqrt(r^2 - dy^2)) via a running sum,
    # shifted by dy. 2r+1 passes instead of one per disk pixel.
    csum = np.zeros((h, w + 1), np.int32)
    np.cumsum(m, axis=1, out=csum[:, 1:])
    out = np.zeros_like(m)
    for dy in range(-r, r + 1):
        half = math.isqrt(r * r - dy * dy)
        lo = np.clip(np.arange(w) - half, 0, w)
        hi = np.clip(np.arange(w) + half + 1, 0, w)
        row = (csum[:, hi] - csum[:, lo]) > 0  # any source pixel in columns [x - half, x + half]
        # out[y] |= row[y - dy]
        if dy >= 0:
            out[dy:] |= row[: h - dy]
        else:
            out[:dy] |= row[-dy:]
    return out


def boundary_tolerance(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Match tolerance in pixels: ``bound_th`` itself if >= 1, else ceil(bound_th * image diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def davis_f(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008) -> float:
    """Boundary F-measure of two binary masks (H, W).

    Boundaries are one pixel wide (:func:`boundary_map`); a boundary pixel of one mask is matched when a boundary
    pixel of the other lies within ``boundary_tolerance`` pixels (a disk). Precision = matched predicted
    boundary / predicted boundary, recall = matched true boundary / true boundary, F = 2PR / (P + R).
    Both boundaries empty gives 1; exactly one empty gives 0. ``void`` pixels are cleared in both masks first.
    """
    p, g = _as_bool(pred), _as_bool(gt)
    _check_same_shape(p, g, "davis_f")
    if void is not None:
        keep = ~_as_bool(void)
        p, g = p & keep, g & keep
    r = boundary_tolerance(p.shape, bound_th)
    bp, bg = boundary_map(p), boundary_map(g)
    n_p, n_g = np.count_nonzero(bp), np.count_nonzero(bg)
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0  # precision or recall is 0 (the other is 1 by convention): F = 0
    precision = np.count_nonzero(bp & dilate_disk(bg, r)) / n_p
    recall = np.count_nonzero(bg & dilate_disk(bp, r)) / n_g
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def davis_quarter_bins(n: int) -> list[tuple[int, int]]:
    """The DAVIS toolkit's four frame bins for decay: inclusive (start, end) index pairs over n frames.

    Bin edges are ``round(linspace(1, n, 5)) - 1``; bin i spans edge i to edge i+1 inclusive, so neighbouring
    bins share their edge frame.
    """
    edges = [int(np.round(v + 1e-10)) - 1 for v in np.linspace(1, n, 5)]
    return [(edges[i], edges[i + 1]) for i in range(4)]


def davis_statistics(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, recall (fraction of frames > 0.5) and decay (first-quarter mean minus last-quarter mean).

    Args:
        values: per-frame J or F of one object over the scored frames (first and last frames excluded).
    """
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    bins = davis_quarter_bins(len(x))
    first = x[bins[0][0] : bins[0][1] + 1]
    last = x[bins[3][0] : bins[3][1] + 1]
    return float(x.mean()), float((x > 0.5).mean()), float(first.mean() - last.mean())


@dataclass(frozen=True)
class ObjectScores:
    """Per-frame J and F of one object of one sequence (frames scored, in order)."""

    sequence: str
    object_id: int
    j: tuple[float, ...]
    f: tuple[float, ...]


def davis_summary(objects: Iterable[ObjectScores]) -> dict:
    """The benchmark table: J&F-Mean, J-Mean/Recall/Decay, F-Mean/Recall/Decay (object-averaged), in [0, 1].

    Every statistic is computed per object, then averaged over all objects of all sequences; J&F-Mean is the
    mean of J-Mean and F-Mean.
    """
    stats = {k: [] for k in ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")}
    per_sequence: dict[str, list[tuple[float, float]]] = {}
    for o in objects:
        jm, jr, jd = davis_statistics(o.j)
        fm, fr, fd = davis_statistics(o.f)
        for k, v in zip(stats, (jm, jr, jd, fm, fr, fd), strict=True):
            stats[k].append(v)
        per_sequence.setdefault(o.sequence, []).append((jm, fm))
    out = {k: float(np.nanmean(v)) if v else float("nan") for k, v in stats.items()}
    out["J&F-Mean"] = (out["J-Mean"] + out["F-Mean"]) / 2
    out["per_sequence"] = {
        s: {"J-Mean": float(np.mean([a for a, _ in v])), "F-Mean": float(np.mean([b for _, b in v]))}
        for s, v in per_sequence.items()
    }
    return out


# COCO panoptic quality ------------------------------------------------------------------------------------

VOID = 0


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG (H, W, 3) -> segment ids (H, W): R + 256 G + 256^2 B."""
    rgb = np.asarray(rgb).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


@dataclass(frozen=True)
class Segment:
    """One panoptic segment: its category and whether it is a crowd region (ground truth only)."""

    category_id: int
    iscrowd: bool = False


@dataclass
class PQMeter:
    """Per-category TP / FP / FN counts and the summed IoU of matches (panoptic quality)."""

    tp: dict[int, int] = field(default_factory=dict)
    fp: dict[int, int] = field(default_factory=dict)
    fn: dict[int, int] = field(default_factory=dict)
    iou: dict[int, float] = field(default_factory=dict)

    def _add(self, d: dict, k: int, v: float) -> None:
        d[k] = d.get(k, 0) + v

    def update(
        self,
        gt_ids: np.ndarray,
        gt_segments: Mapping[int, Segment],
        pred_ids: np.ndarray,
        pred_segments: Mapping[int, Segment],
    ) -> None:
        """Add one image.

        Args:
            gt_ids, pred_ids: (H, W) segment ids; 0 (``VOID``) is unlabelled. Ids present in a map but missing
                from its segment table are treated as void.
            gt_segments, pred_segments: segment id -> :class:`Segment`.
        """
        gt_ids = np.asarray(gt_ids).astype(np.int64)
        pred_ids = np.asarray(pred_ids).astype(np.int64)
        _check_same_shape(pred_ids, gt_ids, "PQMeter.update")
        if VOID in gt_segments or VOID in pred_segments:
            raise ValueError("segment id 0 is reserved for void")
        gt_ids = np.where(np.isin(gt_ids, list(gt_segments)), gt_ids, VOID)
        pred_ids = np.where(np.isin(pred_ids, list(pred_segments)), pred_ids, VOID)
        gt_area = dict(zip(*np.unique(gt_ids, return_counts=True), strict=True))
        pred_area = dict(zip(*np.unique(pred_ids, return_counts=True), strict=True))
        offset = int(max(pred_ids.max(initial=0), 0)) + 1
        pairs, counts = np.unique(gt_ids * offset + pred_ids, return_counts=True)
        overlap = {(int(k // offset), int(k % offset)): int(c) for k, c in zip(pairs, counts, strict=True)}

        matched_gt: set[int] = set()
        matched_pred: set[int] = set()
        for (g, p), inter in overlap.items():
            if g == VOID or p == VOID:
                continue
            gs, ps = gt_segments[g], pred_segments[p]
            if gs.iscrowd or gs.category_id != ps.category_id:
                continue
            # The prediction's pixels on unlabelled ground truth are not held against it.
            union = pred_area[p] + gt_area[g] - inter - overlap.get((VOID, p), 0)
            iou = inter / union
            if iou > 0.5:  # strictly: with > 0.5 a segment can match at most one other
                matched_gt.add(g)
                matched_pred.add(p)
                self._add(self.tp, gs.category_id, 1)
                self._add(self.iou, gs.category_id, iou)

        crowd_by_category: dict[int, list[int]] = {}
        for g, gs in gt_segments.items():
            if g not in gt_area or g in matched_gt:
                continue
            if gs.iscrowd:
                crowd_by_category.setdefault(gs.category_id, []).append(g)
            else:
                self._add(self.fn, gs.category_id, 1)
        for p, ps in pred_segments.items():
            if p not in pred_area or p in matched_pred:
                continue
            ignored = overlap.get((VOID, p), 0)
            ignored += sum(overlap.get((g, p), 0) for g in crowd_by_category.get(ps.category_id, []))
            if ignored / pred_area[p] > 0.5:
                continue
            self._add(self.fp, ps.category_id, 1)

    def merge(self, other: PQMeter) -> PQMeter:
        out = PQMeter()
        for name in ("tp", "fp", "fn", "iou"):
            d = dict(getattr(self, name))
            for k, v in getattr(other, name).items():
                d[k] = d.get(k, 0) + v
            setattr(out, name, d)
        return out

    def summary(self, categories: Mapping[int, bool]) -> dict:
        """PQ, SQ, RQ (in [0, 1]) over All, Things and Stuff; ``categories`` maps category id -> isthing.

        A category counts only if it has at least one TP, FP or FN; per category PQ = sum IoU / (TP + FP/2 +
        FN/2), SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN/2).
        """
        out: dict = {"per_category": {}}
        rows: dict[str, list[tuple[float, float, float]]] = {"All": [], "Things": [], "Stuff": []}
        for c, isthing in categories.items():
            tp, fp, fn = self.tp.get(c, 0), self.fp.get(c, 0), self.fn.get(c, 0)
            if tp + fp + fn == 0:
                continue
            iou = self.iou.get(c, 0.0)
            denom = tp + 0.5 * fp + 0.5 * fn
            pq, sq, rq = iou / denom, (iou / tp if tp else 0.0), tp / denom
            out["per_category"][c] = {"pq": pq, "sq": sq, "rq": rq}
            rows["All"].append((pq, sq, rq))
            rows["Things" if isthing else "Stuff"].append((pq, sq, rq))
        for name, r in rows.items():
            a = np.asarray(r, np.float64).reshape(-1, 3)
            out[name] = {
                "pq": float(a[:, 0].mean()) if len(a) else 0.0,
                "sq": float(a[:, 1].mean()) if len(a) else 0.0,
                "rq": float(a[:, 2].mean()) if len(a) else 0.0,
                "n": len(a),
            }
        return out
