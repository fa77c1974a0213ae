"""Overlay colours and drawing (seggpt.overlay): saturated, distinct, readable on any photo, outlined."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from seggpt.overlay import contour_width, contours, draw_overlay, overlay_colours

# Backgrounds an overlay must stay readable on: white, black, grey, pale and dark skin, sky, pale sky, foliage.
BACKGROUNDS = [(255, 255, 255), (0, 0, 0), (128, 128, 128), (240, 200, 170), (150, 100, 70), (135, 206, 235),
               (200, 225, 250), (40, 120, 40)]  # fmt: skip


def test_colours_are_saturated_distinct_and_far_from_common_backgrounds():
    colours = overlay_colours(40).astype(float)
    assert len(colours) == 41 and (colours[0] == 0).all()
    assert (np.ptp(colours[1:], axis=1) >= 190).all()  # saturated: channels far apart
    first = colours[1:9]
    assert min(np.linalg.norm(a - b) for a, b in itertools.combinations(first, 2)) >= 120
    for c in first:  # half of this is what a fill at alpha 0.5 moves a background pixel
        assert min(np.linalg.norm(c - np.array(bg)) for bg in BACKGROUNDS) >= 110
    assert len({tuple(c) for c in colours[1:]}) == 40  # every label its own colour
    np.testing.assert_array_equal(overlay_colours(3), overlay_colours(40)[:4])  # a label keeps its colour


def test_contours_are_thin_and_inside_labelled_regions():
    labels = np.zeros((20, 20), np.int64)
    labels[5:15, 5:10] = 1
    labels[5:15, 10:15] = 2
    edge = contours(labels, 1)
    assert not edge[labels == 0].any()
    assert edge[5, 7] and edge[10, 5] and edge[10, 9] and edge[10, 10] and not edge[10, 7]
    assert edge[0:5].sum() == 0 and not contours(labels, 2)[10, 7] and contours(labels, 3)[10, 7]
    assert contour_width(480, 640) == 1 and contour_width(12000, 12000) == 12


def test_bands_equal_the_whole_and_the_input_is_not_changed():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 41, 3), dtype=np.uint8)
    labels = np.kron(rng.integers(0, 4, (30, 4)), np.ones((10, 11), np.int64))[:, :41]
    before = image.copy()
    whole = draw_overlay(image, labels, width=3)
    np.testing.assert_array_equal(image, before)
    for y0, y1 in ((0, 7), (7, 150), (150, 300)):
        a, b = max(0, y0 - 3), min(300, y1 + 3)
        band = draw_overlay(image[y0:y1], labels[a:b], width=3, above=y0 - a)
        np.testing.assert_array_equal(band, whole[y0:y1])
    fg = labels > 0
    np.testing.assert_array_equal(whole[~fg], image[~fg])
    with pytest.raises(ValueError, match="alpha"):
        draw_overlay(image, labels, alpha=2)
    with pytest.raises(ValueError, match="must be"):
        draw_overlay(image, labels[:, :5])
