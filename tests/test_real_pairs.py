"""Real photo pairs: bundled photographs load offline, regions are consistent across the two views."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")

from seggpt.data import real_pairs  # noqa: E402
from seggpt.data.augment import AugmentConfig  # noqa: E402
from seggpt.data.base import INSTANCE, Source  # noqa: E402
from seggpt.data.real_pairs import (  # noqa: E402
    HELD_OUT_PHOTOS,
    PHOTOS,
    TRAIN_PHOTOS,
    RealPhotoPairs,
    SegmentedPhoto,
    load_photo,
    segment_regions,
)


def test_every_listed_photo_ships_inside_the_package():
    folder = real_pairs.skimage_data_dir()
    for name, file in PHOTOS.items():
        assert (folder / file).is_file(), name
    img = load_photo("coins", side=100)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and max(img.shape[:2]) == 100
    assert not set(HELD_OUT_PHOTOS) & set(TRAIN_PHOTOS)
    with pytest.raises(ValueError, match="unknown photo"):
        load_photo("lena")


def test_segment_regions_finds_flat_regions_by_area():
    # Four flat quadrants of different sizes plus a speck smaller than min_region.
    img = np.zeros((60, 80, 3), np.uint8)
    img[:40, :50] = (200, 30, 30)
    img[:40, 50:] = (30, 200, 30)
    img[40:, :20] = (30, 30, 200)
    img[40:, 20:] = (220, 220, 40)
    img[5:8, 5:8] = (0, 0, 0)
    seg = segment_regions(img, scale=50, min_region=100)
    # Ids 1.. by decreasing area: 2000 px, 1200 px, 1200 px (tie), then the 400 px quadrant.
    assert np.all(seg[10:35, 10:45] == 1)  # interiors: smoothing blurs the borders
    assert {int(seg[50, 50]), int(seg[20, 65])} == {2, 3}
    assert np.all(seg[44:56, 3:16] == 4)
    assert seg.max() == 4


COLOURS = np.array([(230, 40, 40), (40, 230, 40), (40, 40, 230), (230, 230, 40), (40, 230, 230), (230, 40, 230)])


def _fake_photo(name: str) -> SegmentedPhoto:
    # Six regions of distinct flat colours, so an id's colour in a view tells which region it really is.
    regions = np.zeros((120, 160), np.int32)
    for k in range(6):
        regions[(k // 3) * 60 : (k // 3 + 1) * 60, (k % 3) * 53 : (k % 3 + 1) * 53] = k + 1
    image = np.full((120, 160, 3), 128, np.uint8)
    for k in range(6):
        image[regions == k + 1] = COLOURS[k]
    return SegmentedPhoto(name, image, (regions,))


def test_views_label_the_same_regions(monkeypatch):
    monkeypatch.setattr(real_pairs, "segmented_photo", _fake_photo)
    source = RealPhotoPairs(photos=["coins"], max_regions=6, augment=AugmentConfig(scale=(0.3, 1.0), jitter_prob=0))
    assert isinstance(source, Source)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(20):
        p = source.sample_pair(rng, (64, 64))
        assert p.seg_type == INSTANCE and not p.ids_global
        assert set(np.unique(p.query_labels)) <= set(np.unique(p.example_labels)) | {0}
        assert p.example_labels.max() >= 1
        region_of_id: dict[int, int] = {}
        for labels, image in ((p.example_labels, p.example_image), (p.query_labels, p.query_image)):
            for i in set(np.unique(labels).tolist()) - {0}:
                colour = np.median(image[labels == i], axis=0)
                region = int(np.argmin(np.abs(COLOURS - colour).sum(1)))
                assert region_of_id.setdefault(i, region) == region
                checked += 1
    assert checked > 20


def test_real_pairs_are_deterministic_on_a_real_photo():
    source = RealPhotoPairs(photos=["coins"])
    a = source.sample_pair(np.random.default_rng(3), (48, 48))
    b = source.sample_pair(np.random.default_rng(3), (48, 48))
    for x, y in [(a.example_image, b.example_image), (a.query_labels, b.query_labels)]:
        np.testing.assert_array_equal(x, y)
    assert a.example_image.shape == (48, 48, 3) and a.example_labels.shape == (48, 48)
    assert a.example_labels.max() >= 1


def test_bad_options():
    with pytest.raises(ValueError, match="unknown photos"):
        RealPhotoPairs(photos=["lena"])
    with pytest.raises(ValueError, match="max_regions"):
        RealPhotoPairs(max_regions=0)
