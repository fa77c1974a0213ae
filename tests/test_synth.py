"""SynthContext: determinism, exact visible masks, the held-out split, consistent ids across views and frames."""

from __future__ import annotations

from argparse import Namespace
from dataclasses import replace

import numpy as np
import pytest

from conftest import load_script
from seggpt.data import synth
from seggpt.data.base import INSTANCE, SEMANTIC, Source
from seggpt.data.synth import (
    HELD_OUT_SHAPES,
    HELD_OUT_TEXTURES,
    Scene,
    SynthContextSource,
    contrast_scenes,
    render,
    sample_contrast_pair,
    sample_instance,
    sample_multiclass,
    sample_semantic,
    sample_video,
)

SIZE = (64, 64)


def _arrays(x) -> list[np.ndarray]:
    if isinstance(x, np.ndarray):
        return [x]
    if isinstance(x, list | tuple):
        return [a for v in x for a in _arrays(v)]
    if hasattr(x, "__dataclass_fields__"):
        return [a for k in x.__dataclass_fields__ for a in _arrays(getattr(x, k))]
    return []


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng: sample_semantic(rng, SIZE, 3),
        lambda rng: sample_multiclass(rng, SIZE),
        lambda rng: sample_instance(rng, SIZE),
        lambda rng: sample_video(rng, SIZE, 5, 3),
        lambda rng: SynthContextSource().sample_pair(rng, SIZE),
    ],
    ids=["semantic", "multiclass", "instance", "video", "source"],
)
def test_same_seed_same_output_other_seed_differs(draw):
    a, b, c = draw(np.random.default_rng(7)), draw(np.random.default_rng(7)), draw(np.random.default_rng(8))
    arrays_a, arrays_b, arrays_c = _arrays(a), _arrays(b), _arrays(c)
    assert arrays_a and len(arrays_a) == len(arrays_b)
    for x, y in zip(arrays_a, arrays_b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(arrays_a, arrays_c, strict=False))


def _flat_colours(scene: Scene) -> tuple[Scene, np.ndarray]:
    """The same scene with every object one distinct flat colour on black, no noise: an independent way to see
    which object is visible at each pixel (the renderer's own compositing, not its label bookkeeping)."""
    n = len(scene.objects)
    colours = np.stack([np.array([40 + 50 * (i % 5), 40 + 50 * ((i // 5) % 5), 60 + 60 * (i // 25)]) for i in range(n)])
    objs = tuple(
        replace(o, texture="solid", rgb=tuple(map(float, c)), rgb2=tuple(map(float, c)))
        for o, c in zip(scene.objects, colours, strict=True)
    )
    return Scene(np.zeros_like(scene.background), objs, 0.0), colours


@pytest.mark.parametrize(
    ("attribute", "value"), [("shape", "star5"), ("shape", "random:4242"), ("texture", "dots"), ("colour", "red")]
)
def test_masks_are_exactly_the_visible_pixels_of_the_category(attribute, value):
    vocab = synth.vocabulary("train")
    occluded = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        scene, classes = synth.category_scene(rng, (96, 96), vocab, attribute, [value], num_distractors=(3, 5))
        image, inst = render(scene)
        mask = synth.class_map(inst, classes)
        flat, colours = _flat_colours(scene)
        flat_image, _ = render(flat)
        expected = np.zeros(mask.shape, bool)
        for i, cls in enumerate(classes):
            if cls:
                expected |= (flat_image == colours[i]).all(-1)
        np.testing.assert_array_equal(mask.astype(bool), expected)
        # And the category is what the scene says: every positive object has the value, no distractor has.
        assert all((o.attribute(attribute) == value) == bool(c) for o, c in zip(scene.objects, classes, strict=True))
        # Occlusion happens: some object covers part of another (its visible area < its drawn area).
        for i, o in enumerate(scene.objects):
            hit = synth.object_mask(o, (96, 96))
            if hit is not None and (inst == i + 1).sum() < hit[0].sum():
                occluded += 1
    assert occluded > 0


def test_random_shapes_are_fixed_by_their_name_and_drawn_in_training():
    a, b = synth.shape_polygons("random:17")[0][0], synth.shape_polygons("random:17")[0][0]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() == pytest.approx(1.0)
    assert not np.array_equal(a.shape, synth.shape_polygons("random:18")[0][0].shape) or not np.allclose(
        a, synth.shape_polygons("random:18")[0][0]
    )
    rng = np.random.default_rng(0)
    values = [sample_semantic(rng, 32, 1, attribute="shape").value for _ in range(40)]
    assert any(v.startswith("random:") for v in values) and any(v in synth.TRAIN_SHAPES for v in values)
    # The eval split never draws them: its categories are exactly the held-out named shapes.
    assert synth.vocabulary("eval").p_random_shape == 0


def test_semantic_episode_masks_are_binary_and_non_empty():
    ep = sample_semantic(np.random.default_rng(3), SIZE, 4)
    assert len(ep.images) == len(ep.masks) == 4
    for img, m in zip([*ep.images, ep.query_image], [*ep.masks, ep.query_mask], strict=True):
        assert img.shape == (*SIZE, 3) and img.dtype == np.uint8
        assert m.shape == SIZE and set(np.unique(m)) <= {0, 1} and m.sum() > 0


def test_multiclass_labels_are_categories():
    pair = sample_multiclass(np.random.default_rng(4), SIZE, num_classes=3)
    n = len(pair.meta["values"])
    assert n == 3 and pair.seg_type == SEMANTIC
    assert set(np.unique(pair.example_labels)) <= set(range(n + 1))
    assert set(np.unique(pair.query_labels)) <= set(np.unique(pair.example_labels))


def _record_draws(monkeypatch) -> tuple[set, set]:
    shapes, textures = set(), set()
    real_mask, real_field = synth.object_mask, synth.texture_field

    def object_mask(obj, size):
        shapes.add(obj.shape)
        textures.add(obj.texture)
        return real_mask(obj, size)

    def texture_field(texture, *args, **kwargs):
        textures.add(texture)
        return real_field(texture, *args, **kwargs)

    monkeypatch.setattr(synth, "object_mask", object_mask)
    monkeypatch.setattr(synth, "texture_field", texture_field)
    return shapes, textures


def test_training_never_shows_held_out_shapes_or_textures(monkeypatch):
    shapes, textures = _record_draws(monkeypatch)
    rng = np.random.default_rng(0)
    source = SynthContextSource()
    for _ in range(150):
        source.sample_pair(rng, SIZE)
    for _ in range(20):
        sample_semantic(rng, SIZE, 2)
    assert shapes and textures
    assert not shapes & set(HELD_OUT_SHAPES), shapes & set(HELD_OUT_SHAPES)
    assert not textures & set(HELD_OUT_TEXTURES), textures & set(HELD_OUT_TEXTURES)
    # The draws are varied: most training shapes and textures turned up.
    assert len(shapes) >= len(synth.TRAIN_SHAPES) - 2 and len(textures) >= len(synth.TRAIN_TEXTURES) - 1


def test_eval_split_segments_only_held_out_categories():
    rng = np.random.default_rng(1)
    for _ in range(20):
        ep = sample_semantic(rng, SIZE, 1, split="eval")
        assert (ep.attribute, ep.value) in {("shape", s) for s in HELD_OUT_SHAPES} | {
            ("texture", t) for t in HELD_OUT_TEXTURES
        }
    with pytest.raises(ValueError, match="not a category"):
        sample_semantic(rng, SIZE, 1, split="train", attribute="shape", value="heart")


def _mean_colour(image: np.ndarray, labels: np.ndarray, i: int) -> np.ndarray:
    c = image[labels == i].astype(float).mean(0)
    return c / max(np.linalg.norm(c), 1e-6)


def test_instance_views_share_ids():
    # Objects of distinct flat colours: an id must name the object of the same colour in both views.
    rng = np.random.default_rng(5)
    vocab = synth.vocabulary("train")
    objs = []
    for k, colour in enumerate(["red", "green", "blue", "yellow"]):
        o = synth.random_object(rng, (80, 80), vocab, fixed={"colour": colour, "texture": "solid"})
        objs.append(replace(o, cx=20.0 + 40 * (k % 2), cy=20.0 + 40 * (k // 2), radius=14.0))
    scene = Scene(np.full((80, 80, 3), 128, np.float32), tuple(objs), 0.0)
    checked = 0
    for _ in range(5):
        (ia, la), (ib, lb) = synth.two_views(rng, scene, SIZE, motion=0.1)
        shared = (set(np.unique(la)) & set(np.unique(lb))) - {0}
        for i in shared:
            if (la == i).sum() < 20 or (lb == i).sum() < 20:
                continue
            ca = _mean_colour(ia, la, i)
            others = [j for j in shared if j != i and (lb == j).sum() >= 20]
            same = float(ca @ _mean_colour(ib, lb, i))
            assert all(same > float(ca @ _mean_colour(ib, lb, j)) for j in others)
            checked += 1
    assert checked >= 5
    pair = sample_instance(np.random.default_rng(6), SIZE)
    assert pair.seg_type == INSTANCE and not pair.ids_global
    assert set(np.unique(pair.query_labels)) <= set(np.unique(pair.example_labels))


def test_video_ids_are_consistent_and_objects_reappear():
    video = sample_video(np.random.default_rng(2), SIZE, num_frames=9, num_objects=3)
    assert video.frames.shape == (9, *SIZE, 3) and video.labels.shape == (9, *SIZE)
    assert set(np.unique(video.labels)) <= {0, 1, 2, 3}
    # Object 1 leaves and comes back: visible, then absent in some frame, then visible again.
    present = [(video.labels[t] == 1).any() for t in range(9)]
    first, last = present.index(True), 8 - present[::-1].index(True)
    assert not all(present[first : last + 1])
    # An id keeps its object: in every frame its pixels have that object's colours (a blend of its two shades).
    for t in range(9):
        for i, obj in enumerate(video.objects, start=1):
            px = video.frames[t][video.labels[t] == i].astype(float)
            if len(px) == 0:
                continue
            a, b = np.array(obj.rgb), np.array(obj.rgb2)
            d = b - a
            w = np.clip((px - a) @ d / max(d @ d, 1e-6), 0, 1)
            off = np.linalg.norm(px - (a + w[:, None] * d), axis=1)
            assert np.median(off) < 12, (t, i, np.median(off))


def test_source_pairs_follow_the_contract():
    source = SynthContextSource()
    assert isinstance(source, Source)
    rng = np.random.default_rng(9)
    modes = set()
    for _ in range(40):
        p = source.sample_pair(rng, (48, 64))
        assert p.example_image.shape == p.query_image.shape == (48, 64, 3)
        assert p.example_image.dtype == np.uint8
        assert p.example_labels.shape == p.query_labels.shape == (48, 64)
        assert np.issubdtype(p.example_labels.dtype, np.integer) and p.example_labels.min() >= 0
        assert p.seg_type in (SEMANTIC, INSTANCE) and p.ids_global is False
        assert set(np.unique(p.query_labels)) <= set(np.unique(p.example_labels))
        modes.add(p.meta["mode"])
    assert modes == {"same", "other", "views", "video"}


@pytest.mark.parametrize("attribute", ["shape", "texture", "colour"])
def test_contrast_scenes_punish_copying_the_example_look(attribute):
    vocab = synth.vocabulary("train")
    shares = []  # per query category object: does it have the confound?
    for seed in range(20):
        rng = np.random.default_rng(seed)
        value = vocab.draw(rng, attribute, category=True)
        (example, ex_classes), (query, q_classes), confound = contrast_scenes(rng, SIZE, vocab, attribute, value)
        assert confound != attribute
        ex = list(zip(example.objects, ex_classes, strict=True))
        q = list(zip(query.objects, q_classes, strict=True))
        (positive,) = [o for o, c in ex if c == 1]
        u = positive.attribute(confound)
        assert positive.attribute(attribute) == value
        # Unmarked foils share the confound: the example itself says the confound is not the category.
        assert all(o.attribute(attribute) != value for o, c in ex if c == 0)
        assert any(o.attribute(confound) == u for o, c in ex if c == 0)
        # In the query lookalikes have the confound, and the category's objects have it or not.
        assert all(o.attribute(attribute) == value for o, c in q if c == 1)
        assert all(o.attribute(attribute) != value for o, c in q if c == 0)
        assert any(o.attribute(confound) == u for o, c in q if c == 0)
        shares += [o.attribute(confound) == u for o, c in q if c == 1]
    # Neither copying the look nor avoiding it finds the category.
    assert 0.2 < np.mean(shares) < 0.8


def test_contrast_pairs_are_seeded_and_reach_the_source():
    a = sample_contrast_pair(np.random.default_rng(3), SIZE)
    b = sample_contrast_pair(np.random.default_rng(3), SIZE)
    assert a.meta == b.meta and a.meta["mode"] == "contrast"
    np.testing.assert_array_equal(a.query_labels, b.query_labels)
    assert set(np.unique(a.example_labels)) == set(np.unique(a.query_labels)) == {0, 1}
    # p_contrast = 1: every semantic pair is a contrast pair; 0 (the default) draws the stream as before.
    every = SynthContextSource("semantic", p_contrast=1.0)
    assert {every.sample_pair(np.random.default_rng(i), SIZE).meta["mode"] for i in range(6)} == {"contrast"}
    none = SynthContextSource("semantic", p_contrast=0.0)
    assert "contrast" not in {none.sample_pair(np.random.default_rng(i), SIZE).meta["mode"] for i in range(12)}
    with pytest.raises(ValueError, match="p_contrast"):
        SynthContextSource(p_contrast=-0.1)


def test_by_attribute_contrast_episodes_mark_the_lookalikes():
    script = load_script("synth_by_attribute", folder="projects/synthcontext/scripts")
    args = Namespace(seed=0, split="eval", size=64)
    found = 0
    for i in range(6):
        q_img, q_mask, q_inst, s_img, s_mask, look = script.contrast_episode(args, i, "shape", "heart")
        assert q_img.shape == s_img.shape == (64, 64, 3) and q_mask.any() and s_mask.any()
        assert not (look & (q_mask > 0)).any()  # lookalikes are never the category
        assert set(np.unique(q_inst[look])) <= set(np.unique(q_inst[q_mask == 0]))
        found += bool(look.any())
        again = script.contrast_episode(args, i, "shape", "heart")
        np.testing.assert_array_equal(again[0], q_img)
    assert found >= 4  # a lookalike can be hidden behind another object, rarely


def test_eval_split_source_draws_every_kind():
    # The eval vocabulary is small (two held-out textures): multi-class draws must still work.
    source = SynthContextSource(split="eval", p_multiclass=1.0)
    rng = np.random.default_rng(11)
    for _ in range(30):
        p = source.sample_pair(rng, SIZE)
        assert p.example_labels.max() >= 1


def test_source_rejects_bad_options():
    with pytest.raises(ValueError, match="unknown synth tasks"):
        SynthContextSource({"panoptic": 1.0})
    with pytest.raises(ValueError, match="split"):
        SynthContextSource(split="test")
    with pytest.raises(ValueError, match="size"):
        sample_semantic(np.random.default_rng(0), 8)
    with pytest.raises(ValueError, match="p_share"):
        SynthContextSource(p_share=1.5)


def test_source_p_share_reaches_the_scenes(monkeypatch):
    seen = []
    real = synth.category_scene

    def spy(*args, **kwargs):
        seen.append(kwargs.get("p_share"))
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "category_scene", spy)
    source = SynthContextSource("semantic", p_share=0.9, p_same_scene=0.5, p_multiclass=0.5)
    for i in range(12):
        source.sample_pair(np.random.default_rng(i), SIZE)
    assert seen and set(seen) == {0.9}


def test_source_kind_weights_choose_the_category_kind():
    shapes_only = SynthContextSource("semantic", kind_weights={"shape": 1.0}, p_same_scene=0.5, p_multiclass=0.5)
    kinds = {shapes_only.sample_pair(np.random.default_rng(i), SIZE).meta["attribute"] for i in range(24)}
    assert kinds == {"shape"}
    mixed = SynthContextSource("semantic", kind_weights={"texture": 1.0, "colour": 1.0}, p_same_scene=0.5)
    kinds = {mixed.sample_pair(np.random.default_rng(i), SIZE).meta["attribute"] for i in range(40)}
    assert kinds == {"texture", "colour"}


def test_source_default_kind_weights_keep_the_stream():
    # Spelling out the defaults draws exactly the same pairs as leaving them out (make train-default replays).
    plain = SynthContextSource("semantic")
    spelled = SynthContextSource("semantic", kind_weights=dict(synth.DEFAULT_KIND_WEIGHTS))
    for i in range(8):
        a = plain.sample_pair(np.random.default_rng(i), SIZE)
        b = spelled.sample_pair(np.random.default_rng(i), SIZE)
        assert a.meta == b.meta
        np.testing.assert_array_equal(a.query_image, b.query_image)
        np.testing.assert_array_equal(a.query_labels, b.query_labels)


def test_source_rejects_bad_kind_weights():
    with pytest.raises(ValueError, match="kind weights"):
        SynthContextSource(kind_weights={"size": 1.0})
    with pytest.raises(ValueError, match="kind weights"):
        SynthContextSource(kind_weights={"shape": -1.0, "colour": 2.0})
    # The eval split has no colour categories: colour-only weights give it nothing to draw.
    with pytest.raises(ValueError, match="no weight"):
        SynthContextSource(split="eval", kind_weights={"colour": 1.0})
    with pytest.raises(ValueError, match="no weight"):
        sample_semantic(np.random.default_rng(0), SIZE, split="eval", kind_weights={"colour": 1.0})


def test_generation_speed_is_reported():
    # Not a timed assertion (shared CPUs): the benchmark runs and reports a positive time for every kind.
    times = synth._benchmark(n=3, size=64)
    assert set(times) >= {"semantic pair (1 shot)", "instance pair", "video pair"}
    assert all(wall > 0 and cpu >= 0 for wall, cpu in times.values())


# seggpt eval synthcontext ---------------------------------------------------------------------------------


class _AllForeground:
    """A stand-in predictor: answers "everything" and records the prompts it was given."""

    def __init__(self) -> None:
        self.prompts: list[list[np.ndarray]] = []

    def set_prompts(self, images, masks, **kwargs) -> None:
        self.prompts.append([np.asarray(i) for i in images])

    def predict_batch(self, targets, batch_size: int = 8, progress: bool = False):
        class _P:
            def __init__(self, t):
                self.labels = np.ones(np.asarray(t).shape[:2], np.int32)

        return [_P(t) for t in targets]


def test_synthcontext_benchmark_scores_like_an_independent_count():
    from seggpt.eval.registry import EvalOptions, evaluate
    from seggpt.eval.synthcontext import CATEGORIES

    n, seed, size = 12, 5, 48
    result = evaluate(
        "synthcontext", _AllForeground(), ".", EvalOptions(shots=1, episodes=n, seed=seed, extra={"size": size})
    )
    # Independent count: the query of episode i is default_rng([seed, i, 0]) of category i mod C; predicting
    # everything gives foreground IoU |gt| / |image| and background IoU 0.
    inter = np.zeros(len(CATEGORIES))
    union = np.zeros(len(CATEGORIES))
    for i in range(n):
        attribute, value = CATEGORIES[i % len(CATEGORIES)]
        _, gt = synth.sample_category_image(np.random.default_rng([seed, i, 0]), size, attribute, value, "eval")
        inter[i % len(CATEGORIES)] += gt.sum()
        union[i % len(CATEGORIES)] += gt.size
    assert result.metrics["mIoU"] == pytest.approx(100 * float(np.mean(inter / union)))
    assert result.metrics["FB-IoU"] == pytest.approx(100 * float(inter.sum() / union.sum()) / 2)
    assert result.protocol["episodes"] == n and result.protocol["seed"] == seed


def test_synthcontext_supports_nest_across_shots():
    from seggpt.eval.registry import EvalOptions, evaluate

    one, three = _AllForeground(), _AllForeground()
    evaluate("synthcontext", one, ".", EvalOptions(shots=1, episodes=4, extra={"size": 32}))
    evaluate("synthcontext", three, ".", EvalOptions(shots=3, episodes=4, ensemble="spatial", extra={"size": 32}))
    for p1, p3 in zip(one.prompts, three.prompts, strict=True):
        assert len(p1) == 1 and len(p3) == 3
        np.testing.assert_array_equal(p1[0], p3[0])
        assert not np.array_equal(p3[0], p3[1])


def test_category_image_scene_is_sample_category_image_with_its_scene():
    a = synth.sample_category_image(np.random.default_rng(3), 48, "shape", "heart", "eval")
    image, mask, scene, classes, inst = synth.category_image_scene(
        np.random.default_rng(3), 48, "shape", "heart", "eval"
    )
    np.testing.assert_array_equal(a[0], image)
    np.testing.assert_array_equal(a[1], mask)
    # The mask is the visible pixels of the objects of class 1, and those are the hearts.
    marked = [j + 1 for j, c in enumerate(classes) if c]
    np.testing.assert_array_equal(mask, np.isin(inst, marked).astype(np.uint8))
    assert all((o.shape == "heart") == bool(c) for o, c in zip(scene.objects, classes, strict=True))


def test_consistent_values_keep_what_marked_objects_share_and_unmarked_ones_lack():
    from seggpt.eval.synthcontext import consistent_values

    vocab = synth.vocabulary("train")
    rng = np.random.default_rng(0)

    def obj(shape, texture, colour):
        return synth.random_object(rng, SIZE, vocab, fixed={"shape": shape, "texture": texture, "colour": colour})

    objects = [obj("star5", "solid", "red"), obj("star5", "dots", "red"), obj("circle", "solid", "red")]
    inst = np.array([[1, 2, 3]])
    # Two red stars marked, a red circle not: only the shape explains it.
    assert consistent_values(objects, [1, 1, 0], inst) == [("shape", "star5")]
    # The circle hidden: the colour explains it as well.
    assert consistent_values(objects, [1, 1, 0], np.array([[1, 2, 0]])) == [("shape", "star5"), ("colour", "red")]
    # One solid red star marked: shape, texture and colour all remain, but red and solid are ruled out by the circle.
    assert consistent_values(objects[:1] + objects[2:], [1, 0], np.array([[1, 2]])) == [("shape", "star5")]


def test_references_floor_and_ceiling():
    from seggpt.eval.synthcontext import CATEGORIES, consistent_values, reference_scores

    one = reference_scores(12, 1, size=48)
    three = reference_scores(12, 3, size=48)
    # The true category is always consistent with the examples, so the reasoner only loses to ambiguity, which
    # more examples can only reduce; "every object" ignores the examples.
    assert one["every object"] == three["every object"]
    assert one["every object"]["mIoU"] < one["reasoner"]["mIoU"] <= three["reasoner"]["mIoU"] <= 100
    assert len(one["reasoner"]["class_iou"]) == len(CATEGORIES)
    for i in range(12):
        attribute, value = CATEGORIES[i % len(CATEGORIES)]
        for stream in range(4):
            _, _, scene, classes, inst = synth.category_image_scene(
                np.random.default_rng([0, i, stream]), 48, attribute, value, "eval"
            )
            assert (attribute, value) in consistent_values(list(scene.objects), classes, inst)
