"""Metrics on small cases whose expected values are worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seggpt.eval.metrics import (
    FewShotMeter,
    ObjectScores,
    PQMeter,
    Segment,
    SemanticMeter,
    binary_intersection_union,
    boundary_map,
    boundary_tolerance,
    davis_f,
    davis_j,
    davis_quarter_bins,
    davis_statistics,
    davis_summary,
    dilate_disk,
    disk_offsets,
    rgb_to_id,
)


# Few-shot ------------------------------------------------------------------------------------------------
def test_binary_intersection_union_with_ignore():
    pred = np.array([[1, 1, 0], [0, 0, 0]])
    gt = np.array([[1, 0, 0], [1, 0, 255]])
    # Valid: 5 pixels. fg: pred {(0,0),(0,1)}, gt {(0,0),(1,0)} -> I 1, U 3.
    # bg: pred {(0,2),(1,0),(1,1)}, gt {(0,1),(0,2),(1,1)} -> I 2, U 4.
    inter, union = binary_intersection_union(pred, gt)
    assert inter.tolist() == [2, 1]
    assert union.tolist() == [4, 3]


def test_fewshot_meter_miou_fbiou_and_empty_class():
    m = FewShotMeter((3, 7))
    m.update(3, np.array([[1, 1, 0], [0, 0, 0]]), np.array([[1, 0, 0], [1, 0, 255]]))  # I [2,1] U [4,3]
    m.update(7, np.zeros((2, 2)), np.zeros((2, 2)))  # nothing anywhere: fg I 0 U 0, bg I 4 U 4
    m.update(3, np.ones((1, 1)), np.ones((1, 1)))  # I [0,1] U [0,1]
    # class 3: fg 2/4 = 0.5; class 7: fg 0 / max(0, 1) = 0 -> mIoU 0.25
    assert m.miou() == pytest.approx(0.25)
    # summed: bg 6/8, fg 2/4 -> FB-IoU (0.75 + 0.5) / 2
    assert m.fb_iou() == pytest.approx(0.625)
    assert m.episodes.tolist() == [2, 1]
    with pytest.raises(ValueError, match="not one of"):
        m.update(5, np.zeros((1, 1)), np.zeros((1, 1)))


def test_fewshot_meter_merge_and_roundtrip_equal_one_meter():
    rng = np.random.default_rng(0)
    cases = [(int(rng.integers(2)), rng.integers(0, 2, (5, 6)), rng.integers(0, 2, (5, 6))) for _ in range(10)]
    whole, a, b = FewShotMeter((0, 1)), FewShotMeter((0, 1)), FewShotMeter((0, 1))
    for i, (c, p, g) in enumerate(cases):
        whole.update(c, p, g)
        (a if i % 2 else b).update(c, p, g)
    merged = FewShotMeter.from_dict(a.merge(b).to_dict())
    assert np.array_equal(merged.intersection, whole.intersection)
    assert merged.miou() == whole.miou() and merged.fb_iou() == whole.fb_iou()


# Semantic ------------------------------------------------------------------------------------------------
def test_semantic_meter_miou_macc():
    pred = np.array([[0, 1], [2, 2]])
    gt = np.array([[0, 1], [1, 255]])
    m = SemanticMeter(3)
    m.update(pred, gt)
    # class 0: I1 U1 -> 1; class 1: I1, pred 1, gt 2 -> U2 -> 0.5; class 2: pred 1 (the 255 pixel is ignored),
    # gt 0 -> 0. mIoU 0.5. Acc: 1, 0.5, undefined -> mAcc 0.75.
    assert m.class_iou().tolist() == [1.0, 0.5, 0.0]
    assert m.miou() == pytest.approx(0.5)
    assert m.macc() == pytest.approx(0.75)
    assert math.isnan(m.class_acc()[2])


def test_semantic_meter_absent_class_is_not_averaged():
    m = SemanticMeter(4)
    m.update(np.array([[1, 1]]), np.array([[1, 1]]))
    assert m.miou() == 1.0 and m.macc() == 1.0


# DAVIS ---------------------------------------------------------------------------------------------------
def test_davis_j():
    assert davis_j(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    p = np.zeros((3, 3), bool)
    g = np.zeros((3, 3), bool)
    p[0, :2] = True  # 2 pixels
    g[0, 1:] = True  # 2 pixels, 1 shared -> 1 / 3
    g[1, 0] = True  # 3rd gt pixel -> 1 / 4
    assert davis_j(p, g) == pytest.approx(0.25)
    void = np.zeros((3, 3), bool)
    void[1, 0] = True  # ignoring it brings back 1 / 3
    assert davis_j(p, g, void) == pytest.approx(1 / 3)


def test_boundary_map_one_pixel_square():
    m = np.zeros((4, 4), bool)
    m[1:3, 1:3] = True
    # A pixel is on the boundary when it differs from its right, lower or lower-right neighbour.
    expected = {(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)}
    assert set(zip(*np.nonzero(boundary_map(m)), strict=True)) == expected


def test_boundary_tolerance_davis_480p():
    # 480 x 854: diagonal 979.6 px, 0.008 of it is 7.84 -> 8 pixels.
    assert boundary_tolerance((480, 854)) == 8
    assert boundary_tolerance((50, 50)) == 1  # 0.566 -> 1
    assert boundary_tolerance((10, 10), bound_th=3) == 3


def test_dilate_disk_matches_shifted_union():
    rng = np.random.default_rng(1)
    m = rng.random((23, 31)) > 0.97
    for r in (0, 1, 2, 5):
        want = np.zeros_like(m)
        for dy, dx in disk_offsets(r):
            shifted = np.zeros_like(m)
            ys, xs = np.nonzero(m)
            ys, xs = ys + dy, xs + dx
            ok = (ys >= 0) & (ys < m.shape[0]) & (xs >= 0) & (xs < m.shape[1])
            shifted[ys[ok], xs[ok]] = True
            want |= shifted
        assert np.array_equal(dilate_disk(m, r), want), r
    assert len(disk_offsets(1)) == 5 and len(disk_offsets(2)) == 13


def _half_plane(col: int, size: int = 50) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[:, col:] = True
    return m


def test_davis_f_boundary_tolerance():
    # 50 x 50: tolerance 1 pixel. Foreground from column 10 on: the boundary is column 9 (50 pixels).
    gt = _half_plane(10)
    assert davis_f(gt, gt) == 1.0
    assert davis_f(_half_plane(11), gt) == 1.0  # boundary at column 10: 1 pixel away, within tolerance
    assert davis_f(_half_plane(12), gt) == 0.0  # 2 pixels away: nothing matches
    # Top half shifted by 1, bottom half by 2. Predicted boundary: (r, 10) for r <= 24, (24, 11) (it differs
    # from the pixel below), (r, 11) for r >= 25: 51 pixels, of which the 25 of column 10 match -> P = 25/51.
    # The true boundary's rows 0..24 are matched -> R = 25/50. F = 2PR / (P + R) = 50/101.
    pred = np.zeros((50, 50), bool)
    pred[:25, 11:] = True
    pred[25:, 12:] = True
    assert davis_f(pred, gt) == pytest.approx(50 / 101)


def test_davis_f_empty_cases():
    z = np.zeros((8, 8), bool)
    one = z.copy()
    one[2:5, 2:5] = True
    assert davis_f(z, z) == 1.0
    assert davis_f(one, z) == 0.0
    assert davis_f(z, one) == 0.0
    void = np.ones((8, 8), bool)
    assert davis_f(one, z, void) == 1.0  # everything void: both empty


def test_davis_statistics_and_bins():
    x = [1, 1, 0, 0, 0.6]
    # mean 2.6/5; recall 3/5; 5 frames -> bins (0,1)..(3,4): decay mean(1,1) - mean(0,0.6) = 0.7
    assert davis_statistics(x) == pytest.approx((0.52, 0.6, 0.7))
    # 8 frames: edges round(1, 2.75, 4.5, 6.25, 8) - 1 = 0, 2, 4, 5, 7 (4.5 rounds up)
    assert davis_quarter_bins(8) == [(0, 2), (2, 4), (4, 5), (5, 7)]
    y = np.arange(8) / 10
    assert davis_statistics(y)[2] == pytest.approx((0 + 0.1 + 0.2) / 3 - (0.5 + 0.6 + 0.7) / 3)


def test_davis_summary_object_average():
    objs = [ObjectScores("a", 1, (1, 1, 0), (1, 1, 0)), ObjectScores("a", 2, (1, 0, 1), (1, 0, 0))]
    s = davis_summary(objs)
    # 3 frames: bins (0,1), (1,1), (1,2), (2,2). J decay: obj1 1 - 0 = 1, obj2 0.5 - 1 = -0.5.
    assert s["J-Mean"] == pytest.approx(2 / 3)
    assert s["J-Decay"] == pytest.approx(0.25)
    assert s["F-Mean"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert s["J&F-Mean"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert s["F-Recall"] == pytest.approx((2 / 3 + 1 / 3) / 2)


# Panoptic ------------------------------------------------------------------------------------------------
A, B = 1, 2  # A a thing, B stuff


def _pq_images():
    seg = Segment
    return [
        # gt 1: A (4 px), 2: B (3 px), 3: crowd A (2 px), one void pixel.
        (
            np.array([1, 1, 1, 1, 2, 2, 2, 3, 3, 0]),
            {1: seg(A), 2: seg(B), 3: seg(A, True)},
            np.array([5, 5, 5, 0, 6, 6, 7, 7, 7, 7]),
            {5: seg(A), 6: seg(B), 7: seg(A)},
        ),
        # (1,4) IoU: union 3 + 2 - 1 - 2 (pred on void) = 2 -> 0.5, not > 0.5: FN; pred 4 is 2/3 void: not FP.
        (np.array([1, 1, 0, 0]), {1: seg(A)}, np.array([0, 4, 4, 4]), {4: seg(A)}),
        # pred 4 (B) over gt A: no match, FP B; pred 6 (A): IoU 1/3; half of it on void (not > 0.5): FP A; FN A.
        (np.array([1, 1, 1, 0]), {1: seg(A)}, np.array([4, 4, 6, 6]), {4: seg(B), 6: seg(A)}),
    ]


def test_pq_hand_case():
    m = PQMeter()
    for g, gs, p, ps in _pq_images():
        m.update(g, gs, p, ps)
    # Image 1: (1,5) IoU 3/4 TP A; (2,6) IoU 2/3 TP B; pred 7 unmatched, 1 void + 2 crowd-A pixels of 4: ignored.
    assert m.tp == {A: 1, B: 1}
    assert m.fn == {A: 2}
    assert m.fp == {A: 1, B: 1}
    s = m.summary({A: True, B: False})
    pq_a = 0.75 / (1 + 0.5 * 1 + 0.5 * 2)  # 0.3
    pq_b = (2 / 3) / (1 + 0.5 * 1)
    assert s["Things"]["pq"] == pytest.approx(pq_a)
    assert s["Stuff"]["pq"] == pytest.approx(pq_b)
    assert s["All"]["pq"] == pytest.approx((pq_a + pq_b) / 2)
    assert s["All"]["sq"] == pytest.approx((0.75 + 2 / 3) / 2)
    assert s["Things"]["rq"] == pytest.approx(1 / 2.5)


def test_pq_merge_equals_single_meter():
    imgs = _pq_images()
    whole, a, b = PQMeter(), PQMeter(), PQMeter()
    for i, args in enumerate(imgs):
        whole.update(*args)
        (a if i == 0 else b).update(*args)
    cats = {A: True, B: False}
    assert a.merge(b).summary(cats) == whole.summary(cats)


def test_rgb_to_id():
    assert rgb_to_id(np.array([[[1, 2, 3]]]))[0, 0] == 1 + 2 * 256 + 3 * 65536
