"""In-context pair sampling, random colouring, masking, augmentation and the mixture sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seggpt.data.augment import AugmentConfig, random_view
from seggpt.data.base import IGNORE, INSTANCE, SEMANTIC, DataError, Pair
from seggpt.data.masking import MaskingConfig, block_mask, half_mask, sample_mask
from seggpt.data.mixture import PAPER_WEIGHTS, Mixture, StepSampler, TrainingSamples
from seggpt.data.pairs import InstancePairs, SemanticPairs, build_sample, stitch
from seggpt.data.readers.base import LabelDataset
from seggpt.transforms import denormalize

NO_AUG = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, jitter_prob=0.0)


class Tiny(LabelDataset):
    """Eight 8x8 images; item i shows class 1 + i % 3 on its left half (and class 4 on item 0 only)."""

    def __init__(self, seg_type: int = SEMANTIC, n: int = 8) -> None:
        self.seg_type, self.n, self.name = seg_type, n, "tiny"

    def __len__(self) -> int:
        return self.n

    def describe(self, i: int) -> str:
        return f"tiny/{i}"

    def load(self, i: int):
        lab = np.zeros((8, 8), np.int32)
        lab[:, :4] = 1 + i % 3
        if i == 0:
            lab[0, 7] = 4
        img = np.full((8, 8, 3), 10 * i, np.uint8)
        return img, lab


def test_semantic_pair_frequencies_follow_the_supplementary():
    src = SemanticPairs(Tiny(), p_same=0.5, augment=NO_AUG)
    n = 1500
    modes = [src.sample_pair(np.random.default_rng([1, k]), (8, 8)).meta["mode"] for k in range(n)]
    same = sum(m.startswith("same") for m in modes) / n
    # Class 4 occurs in item 0 only, so a few "other" draws fall back to a view of the same image.
    fallback = modes.count("same_fallback") / n
    assert abs(modes.count("same") / n - 0.5) < 0.05, same
    assert fallback < 0.05
    # "Other" examples really are another image with a class of the query.
    for k in range(50):
        p = src.sample_pair(np.random.default_rng([2, k]), (8, 8))
        ex_file, q_file = p.meta["files"]
        assert (ex_file == q_file) == p.meta["mode"].startswith("same")
        shared = (set(np.unique(p.example_labels)) & set(np.unique(p.query_labels))) - {0}
        assert shared, "example and query must share a class"
        assert p.seg_type == SEMANTIC


def test_other_image_query_keeps_only_classes_the_example_shows():
    src = SemanticPairs(Tiny(), p_same=0.0, augment=NO_AUG)
    seen_other = False
    for k in range(40):
        p = src.sample_pair(np.random.default_rng([3, k]), (8, 8))
        if p.meta["mode"] == "other":
            seen_other = True
            assert set(np.unique(p.query_labels)) <= set(np.unique(p.example_labels)) | {0}
    assert seen_other


def test_absent_pairs_ask_for_a_class_the_query_image_does_not_show():
    data = Tiny()
    src = SemanticPairs(data, augment=NO_AUG, p_absent=1.0)
    asked = set()
    for k in range(60):
        p = src.sample_pair(np.random.default_rng([5, k]), (8, 8))
        assert p.meta["mode"] == "absent" and p.seg_type == SEMANTIC
        shown = set(np.unique(p.example_labels)) - {0}
        assert len(shown) == 1  # one class of the example
        (c,) = shown
        asked.add(int(c))
        q = int(p.meta["files"][1].split("/")[1])
        assert c not in np.unique(data.load(q)[1])  # the whole query image lacks it, not only the view
        assert not p.query_labels.any()  # so the answer is all background
    assert asked == {1, 2, 3, 4}
    # Mixed in at its probability; without it the stream is the one configs had before.
    mixed = SemanticPairs(data, augment=NO_AUG, p_absent=0.3)
    modes = [mixed.sample_pair(np.random.default_rng([6, k]), (8, 8)).meta["mode"] for k in range(1000)]
    assert abs(modes.count("absent") / 1000 - 0.3) < 0.05
    plain, zero = SemanticPairs(data, augment=NO_AUG), SemanticPairs(data, augment=NO_AUG, p_absent=0.0)
    for k in range(20):
        a, b = (s.sample_pair(np.random.default_rng([7, k]), (8, 8)) for s in (plain, zero))
        assert a.meta == b.meta and np.array_equal(a.query_labels, b.query_labels)
    with pytest.raises(ValueError, match="p_absent"):
        SemanticPairs(data, p_absent=1.5)


def test_absent_pair_query_is_painted_background():
    p = SemanticPairs(Tiny(), augment=NO_AUG, p_absent=1.0).sample_pair(np.random.default_rng(8), (8, 8))
    sample = build_sample(p, np.random.default_rng(9), (8, 8), 4, MaskingConfig())
    colours = denormalize(sample["masks"])
    assert colours[:, 8:].abs().max() < 1e-3  # the query half: black everywhere
    assert colours[:, :8].amax() > 100  # the example half shows its class in colour


def test_instance_pairs_are_always_two_views_of_one_image():
    src = InstancePairs(Tiny(INSTANCE))
    for k in range(30):
        p = src.sample_pair(np.random.default_rng([4, k]), (8, 8))
        assert p.meta["mode"] == "views" and p.seg_type == INSTANCE and not p.ids_global
        assert len(p.meta["files"]) == 1


def test_random_colouring_keeps_label_structure_and_is_fresh_per_pair():
    rng = np.random.default_rng(0)
    ex = rng.integers(0, 5, size=(16, 16)).astype(np.int32)
    q = rng.integers(0, 5, size=(16, 16)).astype(np.int32)
    q[0, :4] = IGNORE
    img = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    pair = Pair(img, ex, img, q, SEMANTIC)
    cfg = MaskingConfig(half_prob=1.0)
    s = build_sample(pair, np.random.default_rng(1), (16, 16), 8, cfg)
    colours = denormalize(s["masks"]).round().to(torch.int64).permute(1, 2, 0).numpy()  # (32, 16, 3)
    labels = np.concatenate([ex, q], axis=0)
    flat_c = colours.reshape(-1, 3)
    flat_l = labels.reshape(-1)
    # One colour per label, across both halves; background and ignore black; distinct labels distinct colours.
    by_label = {}
    for lab in np.unique(flat_l):
        cs = np.unique(flat_c[flat_l == lab], axis=0)
        assert len(cs) == 1, f"label {lab} got {len(cs)} colours"
        by_label[int(lab)] = tuple(cs[0])
    assert by_label[0] == (0, 0, 0) and by_label[IGNORE] == (0, 0, 0)
    fg = [by_label[k] for k in (1, 2, 3, 4)]
    assert len(set(fg)) == 4 and (0, 0, 0) not in fg
    # valid is 0 exactly on ignored pixels.
    assert torch.equal(s["valid"][0] == 0, torch.from_numpy(labels == IGNORE))
    assert s["bool_masked_pos"].shape == (4 * 2,) and s["seg_type"].item() == SEMANTIC
    # Another draw paints the same structure with other colours.
    s2 = build_sample(pair, np.random.default_rng(2), (16, 16), 8, cfg)
    assert not torch.allclose(s["masks"], s2["masks"])
    assert torch.equal(s["images"], s2["images"])


def test_masking_half_and_blocks():
    grid = (8, 4)
    assert half_mask(grid).reshape(8, 4)[4:].all() and not half_mask(grid).reshape(8, 4)[:4].any()
    cfg = MaskingConfig(half_prob=0.1, block_ratio=0.5)
    rng = np.random.default_rng(0)
    masks = [sample_mask(grid, rng, cfg) for _ in range(2000)]
    halves = sum((m == half_mask(grid)).all() for m in masks) / len(masks)
    assert abs(halves - 0.1) < 0.03
    assert all(m.sum() == 16 for m in masks)
    for ratio in (0.25, 0.75):
        m = block_mask((32, 16), ratio, rng, cfg)
        assert m.sum() == round(ratio * 512)
        # Block masking covers both halves (example and query), unlike the half mask.
        grid_m = m.reshape(32, 16)
        assert grid_m[:16].any() and grid_m[16:].any()


def test_random_view_moves_image_and_labels_together():
    # The image encodes its label (grey level 40 * label), so after the view they must still agree.
    lab = np.zeros((40, 40), np.int32)
    lab[5:25, 5:20] = 1
    lab[20:35, 22:38] = 2
    img = np.repeat((40 * lab).astype(np.uint8)[..., None], 3, axis=2)
    cfg = AugmentConfig(jitter_prob=0.0, hflip=0.5)
    for seed in range(10):
        v_img, v_lab = random_view(img, lab, (24, 24), np.random.default_rng(seed), cfg)
        assert v_img.shape == (24, 24, 3) and v_lab.shape == (24, 24)
        assert set(np.unique(v_lab)) <= {0, 1, 2}
        # Compare away from label boundaries, where bicubic and nearest legitimately differ.
        pad = np.pad(v_lab, 1, mode="edge")
        interior = np.ones_like(v_lab, bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                interior &= pad[1 + dy : 25 + dy, 1 + dx : 25 + dx] == v_lab
        # Bicubic rings a little near edges; a misaligned label would be off by a whole level (40).
        assert np.abs(v_img[..., 0].astype(int) - 40 * v_lab)[interior].max() <= 10


def test_stitch_offsets_instance_ids():
    a_lab = np.ones((8, 8), np.int32)
    b_lab = np.ones((8, 8), np.int32)
    img = np.zeros((8, 8, 3), np.uint8)
    a = Pair(img, a_lab, img, a_lab, INSTANCE, ids_global=False)
    b = Pair(img, b_lab, img, b_lab, INSTANCE, ids_global=False)
    found = set()
    for seed in range(10):
        s = stitch(a, b, np.random.default_rng(seed), (8, 8))
        assert s.example_labels.shape == (8, 8)
        found |= set(np.unique(s.example_labels).tolist())
    assert found == {1, 2}  # the second pair's instance 1 became 2: its own colour
    sem = stitch(Pair(img, a_lab, img, a_lab), Pair(img, b_lab, img, b_lab), np.random.default_rng(0), (8, 8))
    assert set(np.unique(sem.example_labels).tolist()) == {1}  # class ids are shared across pairs


class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def __len__(self) -> int:
        return 1

    def sample_pair(self, rng, size):
        img = np.zeros((*size, 3), np.uint8)
        lab = np.zeros(size, np.int32)
        return Pair(img, lab, img, lab, meta={"source": self.name})


def test_mixture_follows_the_paper_weights():
    names = list(PAPER_WEIGHTS)
    mix = Mixture([Named(n) for n in names], [PAPER_WEIGHTS[n] for n in names])
    rng = np.random.default_rng(0)
    n = 20000
    counts = {k: 0 for k in names}
    for _ in range(n):
        counts[mix.choose(rng).name] += 1
    for k in names:
        assert abs(counts[k] / n - PAPER_WEIGHTS[k]) < 0.012, (k, counts[k] / n)
    with pytest.raises(ValueError, match="weight"):
        Mixture([Named("a")], [-1.0])


def test_samples_are_a_pure_function_of_seed_and_index():
    mix = Mixture([SemanticPairs(Tiny()), InstancePairs(Tiny(INSTANCE))])
    ds = TrainingSamples(mix, (8, 8), 4, seed=7)
    a, b = ds[12], ds[12]
    for k in a:
        assert torch.equal(a[k], b[k])
    c = TrainingSamples(mix, (8, 8), 4, seed=8)[12]
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_sampler_shards_the_global_batch_by_rank():
    single = list(StepSampler(8, 0, 1, start_step=2, steps=4))
    ranks = [list(StepSampler(8, r, 2, start_step=2, steps=4)) for r in range(2)]
    assert single == list(range(16, 32))
    # Step by step, the ranks' slices concatenate to the single process's batch.
    for step in range(2):
        assert ranks[0][4 * step : 4 * step + 4] + ranks[1][4 * step : 4 * step + 4] == single[8 * step : 8 * step + 8]
    with pytest.raises(ValueError, match="divisible"):
        StepSampler(6, 0, 4)


class Flaky(Tiny):
    def load(self, i):
        if i % 2:
            raise DataError(f"cannot read mask flaky/{i}.png")
        return super().load(i)


def test_bad_samples_are_skipped_and_counted_or_raised():
    src = InstancePairs(Flaky(INSTANCE))
    ds = TrainingSamples(Mixture([src]), (8, 8), 4, skip_bad=True)
    skipped = sum(int(ds[k]["skipped"]) for k in range(40))
    assert skipped > 0
    strict = TrainingSamples(Mixture([src]), (8, 8), 4, skip_bad=False)
    with pytest.raises(DataError, match=r"flaky/\d+\.png"):
        for k in range(40):
            strict[k]


def test_foreground_weight_scales_the_loss_weights_of_labelled_pixels():
    rng = np.random.default_rng(0)
    ex = np.zeros((16, 16), np.int64)
    ex[2:6, 2:6] = 1
    qu = np.zeros((16, 16), np.int64)
    qu[8:12, 8:12] = 1
    qu[0, :] = IGNORE
    img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    pair = Pair(img, ex, img, qu, SEMANTIC, True, {})
    plain = build_sample(pair, np.random.default_rng(1), (16, 16), 4, MaskingConfig())
    heavy = build_sample(pair, np.random.default_rng(1), (16, 16), 4, MaskingConfig(foreground_weight=3.0))
    labels = torch.from_numpy(np.concatenate([ex, qu]))
    assert torch.equal(plain["valid"][0], (labels != IGNORE).float())  # the paper's uniform loss by default
    expected = torch.where(labels > 0, 3.0, 1.0) * (labels != IGNORE)
    assert torch.equal(heavy["valid"][0], expected)
    assert torch.equal(heavy["masks"], plain["masks"])  # only the weights change
    with pytest.raises(ValueError, match="foreground_weight"):
        MaskingConfig(foreground_weight=0)


def test_small_labels_weigh_more_up_to_the_cap():
    """masking.small_cap: a label covering a fraction f of the pair's valid pixels weighs min(cap, area / f)."""
    rng = np.random.default_rng(0)
    ex = np.zeros((20, 10), np.int64)
    ex[:, :5] = 1  # label 1: 100 pixels of the example
    ex[0, 0] = 2  # label 2: one pixel
    qu = np.zeros((20, 10), np.int64)
    qu[0:2, :] = 3  # label 3: 20 pixels
    qu[19, :] = IGNORE  # 10 ignored: 390 valid pixels in the pair
    img = rng.integers(0, 255, (20, 10, 3), dtype=np.uint8)
    pair = Pair(img, ex, img, qu, SEMANTIC, True, {})
    config = MaskingConfig(foreground_weight=2.0, small_cap=8.0, small_area=0.1)
    got = build_sample(pair, np.random.default_rng(1), (20, 10), 5, config)["valid"][0]
    labels = np.concatenate([ex, qu])
    weight = {0: 1.0, 1: 2.0, 2: 2.0 * 8.0, 3: 2.0 * 0.1 * 390 / 20}  # label 1: 0.1 * 390 / 99 < 1 keeps 1
    expected = np.vectorize(lambda v: weight.get(v, 0.0))(labels).astype(np.float32)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="small_cap"):
        MaskingConfig(small_cap=0.5)
    with pytest.raises(ValueError, match="small_area"):
        MaskingConfig(small_area=0)
