"""Each benchmark runner on a fixture in its dataset's layout, with a fake predictor whose answers are drawn into
the images (see eval_fixtures.py), so every expected score is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from eval_fixtures import (
    FakePredictor,
    FakeVideoPredictor,
    coco_category_ids,
    rgb_from_red,
    save_jpg,
    save_png,
    square,
    write_ade,
    write_clinicdb,
    write_coco,
    write_davis,
    write_fss,
    write_pascal,
    write_user_folder,
)
from seggpt.eval import EvalOptions, Shard, evaluate, get, run_local, sample_episodes
from seggpt.eval import fss as fss_mod

# pycocotools 2.0 decoding under numpy 2 warns on every mask; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGGPT_CACHE", str(tmp_path / "cache"))


def _learned_prompt(tmp_path, classes):
    """A prompt file for a random vit_tiny model, and that model (its fingerprint must match)."""
    import torch

    from seggpt import SegGPT, vit_tiny
    from seggpt.tuning import LearnedPrompt, model_fingerprint, save_prompts

    model = SegGPT(vit_tiny()).eval()
    h, w = model.config.image_size
    prompt = LearnedPrompt(
        torch.zeros(1, 3, h, w), torch.zeros(1, 3, h, w), "semantic", classes, model_fingerprint(model)
    )
    return save_prompts([prompt], tmp_path / "prompt.safetensors"), model


def _sharded(name, predictor_factory, data, options, world=2):
    b = get(name)
    states = [run_local(b, predictor_factory(), data, options, Shard(r, world)) for r in range(world)]
    return b.summarize(states, options)


# Episodes ------------------------------------------------------------------------------------------------
def test_episodes_deterministic_prefix_and_no_query_in_supports():
    items = {0: [f"a{i}" for i in range(10)], 1: [f"b{i}" for i in range(10)]}
    queries = [(k, c) for c, ks in items.items() for k in ks]
    e5 = sample_episodes(queries, items, shots=5, seed=0, num_episodes=50)
    assert e5 == sample_episodes(queries, items, shots=5, seed=0, num_episodes=50)
    e1 = sample_episodes(queries, items, shots=1, seed=0, num_episodes=50)
    assert [e.supports[0] for e in e1] == [e.supports[0] for e in e5]  # k-shot extends (k-1)-shot
    assert all(e.query not in e.supports and len(set(e.supports)) == 5 for e in e5)
    assert all(s in items[e.class_id] for e in e5 for s in e.supports)
    other = sample_episodes(queries, items, shots=5, seed=1, num_episodes=50)
    assert [e.supports for e in other] != [e.supports for e in e5]
    # Episode i does not depend on how many episodes are drawn.
    assert sample_episodes(queries, items, shots=5, seed=0, num_episodes=10) == e5[:10]
    # One episode per query, in order, without num_episodes (FSS-1000).
    every = sample_episodes(queries, items, shots=1, seed=0)
    assert [(e.query, e.class_id) for e in every] == queries


def test_episode_orders():
    items = {0: [f"a{i}" for i in range(18)], 1: ["b0", "b1"]}
    queries = [(k, c) for c, ks in items.items() for k in ks]
    cyc = sample_episodes(queries, items, shots=1, seed=0, num_episodes=25)
    assert [(e.query, e.class_id) for e in cyc] == (queries + queries)[:25]  # in order, starting over
    uni = sample_episodes(queries, items, shots=1, seed=0, num_episodes=400, order="class-uniform")
    share = sum(e.class_id == 1 for e in uni) / len(uni)
    assert 0.4 < share < 0.6  # classes, not images, are drawn uniformly (class 1 has 2 of 20 images)
    with pytest.raises(ValueError, match="order"):
        sample_episodes(queries, items, shots=1, seed=0, order="random")


# FSS-1000 ------------------------------------------------------------------------------------------------
def test_fss1000(tmp_path):
    data = write_fss(tmp_path)
    pred = FakePredictor()
    r = evaluate("fss1000", pred, data, EvalOptions(shots=1))
    # cat_a perfect (IoU 1), cat_b empty answers (IoU 0): mIoU 50. Background: 6 images, I = 192 each,
    # U = 192 (cat_a) or 256 (cat_b): 1152 / 1344; foreground 192 / 384 -> FB-IoU (6/7 + 1/2) / 2.
    assert r.metrics["mIoU"] == pytest.approx(50.0)
    assert r.metrics["FB-IoU"] == pytest.approx(100 * (6 / 7 + 0.5) / 2)
    assert r.details["episodes"] == 6 and len(pred.calls) == 6
    assert r.details["class_iou"] == {"cat_a": 100.0, "cat_b": 0.0}
    assert r.paper["mIoU"] == 85.6
    assert all(len(c["masks"]) == 1 and set(c["masks"][0].ravel().tolist()) == {0, 1} for c in pred.calls)


def test_fss1000_two_shots_use_the_other_images(tmp_path):
    data = write_fss(tmp_path)
    episodes, classes, _ = fss_mod.build_episodes(data, EvalOptions(shots=2))
    assert classes == ["cat_a", "cat_b"] and len(episodes) == 6
    for e in episodes:
        cls = classes[e.class_id]
        assert sorted(e.supports) == sorted({f"{cls}/{n}" for n in (1, 2, 3)} - {e.query})
    pred = FakePredictor()
    evaluate("fss1000", pred, data, EvalOptions(shots=2, ensemble="spatial"))
    assert all(len(c["images"]) == 2 and c["ensemble"] == "spatial" for c in pred.calls)


def test_fss1000_split_file_replaces_the_default(tmp_path):
    data = write_fss(tmp_path, split=False)
    split = tmp_path / "mine.txt"
    split.write_text("cat_a\n")
    r = evaluate("fss1000", FakePredictor(), data, EvalOptions(split_file=split))
    assert r.metrics["mIoU"] == 100.0 and r.protocol["split_file"] == str(split)
    split.write_text("cat_a\nnot_there\n")
    with pytest.raises(FileNotFoundError, match="not_there"):
        evaluate("fss1000", FakePredictor(), data, EvalOptions(split_file=split))
    with pytest.raises(FileNotFoundError, match="split file"):
        evaluate("fss1000", FakePredictor(), data, EvalOptions(split_file=tmp_path / "absent.txt"))


def test_fss1000_official_split_is_shipped():
    names = fss_mod.official_split()
    assert len(names) == len(set(names)) == 240
    assert {"bus", "hotel_slipper", "abe's_flyingfish", "tower_pisa"} <= set(names)


def test_fss1000_defaults_to_the_official_split(tmp_path):
    """No --split-file and no list beside the data: the official 240 test classes, and nothing else."""
    names = fss_mod.official_split()
    data = tmp_path / "fss"
    m = square((8, 8), 2, 6, 2, 6)
    for name in [*names, "a_training_class"]:  # a class outside the split is never read
        for n in (1, 2):
            save_png(data / name / f"{n}.png", m * 255)
            save_jpg(data / name / f"{n}.jpg", rgb_from_red(m * 255))
    r = evaluate("fss1000", FakePredictor(), data, EvalOptions(shots=1))
    assert sorted(r.details["class_iou"]) == sorted(names) and r.details["episodes"] == 480
    assert r.metrics["mIoU"] == 100.0
    assert r.protocol["split_file"] == "the official test split (fss1000_test_classes.txt)"
    # Classes of the split that are missing are named, with how many.
    for n in (1, 2):
        (data / names[0] / f"{n}.png").unlink()
        (data / names[0] / f"{n}.jpg").unlink()
    (data / names[0]).rmdir()
    with pytest.raises(FileNotFoundError, match=f"1 of the 240 test classes .*{names[0]}"):
        evaluate("fss1000", FakePredictor(), data)
    with pytest.raises(FileNotFoundError, match="240 of the 240 test classes"):
        evaluate("fss1000", FakePredictor(), write_fss(tmp_path / "small", split=False))


# COCO-20i ------------------------------------------------------------------------------------------------
def test_coco20i_fold_split_and_crowd(tmp_path):
    from seggpt.eval.coco20i import fold_classes

    assert fold_classes(0)[:3] == [0, 4, 8] and fold_classes(3)[-1] == 79
    assert sorted(sum((fold_classes(f) for f in range(4)), [])) == list(range(80))
    data = write_coco(tmp_path)
    r = evaluate("coco20i", FakePredictor(), data, EvalOptions(folds=(0,), episodes=40))
    fold = r.details["folds"]["0"]
    c0, c4 = coco_category_ids()[0], coco_category_ids()[4]
    # c0 is exactly the red region, crowd part included: IoU 1; c4 never red: 0; the 18 other classes of the
    # fold have no episode here: 0. mIoU = 1/20.
    assert fold["class_iou"][f"class{c0}"] == 100.0
    assert fold["class_iou"][f"class{c4}"] == 0.0
    assert len(fold["class_iou"]) == 20 and fold["episodes"] == 40
    assert r.metrics["mIoU"] == pytest.approx(5.0)


# PASCAL-5i -----------------------------------------------------------------------------------------------
def test_pascal5i_ignores_border(tmp_path):
    data = write_pascal(tmp_path)
    r = evaluate("pascal5i", FakePredictor(), data, EvalOptions(folds=(0,), episodes=30))
    fold = r.details["folds"]["0"]
    # Class 1: red region = the class plus its 255 border; border ignored -> IoU 1. Class 2 never red: 0.
    assert fold["class_iou"]["aeroplane"] == 100.0
    assert fold["class_iou"]["bicycle"] == 0.0
    assert r.metrics["mIoU"] == pytest.approx(20.0)


def test_pascal5i_fold_lists(tmp_path):
    from seggpt.eval.pascal5i import VOCData, build_episodes

    data = write_pascal(tmp_path / "voc")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "fold0.txt").write_text("2007_000002__1\n2007_000001__1\n2007_000004__2\n2007_000003__2\n")
    eps = build_episodes(VOCData(data), lists, 0, EvalOptions(episodes=6))
    assert [(e.query, e.class_id) for e in eps][:5] == [
        ("2007_000002", 1), ("2007_000001", 1), ("2007_000004", 2), ("2007_000003", 2), ("2007_000002", 1),
    ]  # fmt: skip
    assert eps[0].supports == ("2007_000001",)
    r = evaluate("pascal5i", FakePredictor(), data, EvalOptions(folds=(0,), episodes=8, split_file=lists))
    assert r.metrics["mIoU"] == pytest.approx(20.0)
    (lists / "fold0.txt").write_text("2007_000002__33\n")
    with pytest.raises(ValueError, match="bad line"):
        evaluate("pascal5i", FakePredictor(), data, EvalOptions(folds=(0,), split_file=lists))


# ADE20K --------------------------------------------------------------------------------------------------
def test_ade20k_example_based(tmp_path):
    data = write_ade(tmp_path)
    pred = FakePredictor()
    r = evaluate("ade20k", pred, data, EvalOptions(shots=1, seeds=(1000,)))
    # Categories with a training image: 1, 2, 3. Category 1: IoU 1, Acc 1. Category 2: 40 px predicted in v1,
    # 100 px true in v2, none shared: IoU 0, Acc 0. Category 3: 40 px predicted, none true: IoU 0, Acc undefined.
    # 'other' pixels (red in v1) are ignored. mIoU = 1/3, mAcc = 1/2.
    assert r.metrics["mIoU"] == pytest.approx(100 / 3)
    assert r.metrics["mAcc"] == pytest.approx(50.0)
    assert r.details["best_seed"] == 1000
    assert len(pred.calls) == 3 and all(c["masks"][0].any() for c in pred.calls)
    # Examples of a category contain it, and k examples are distinct.
    pred2 = FakePredictor()
    evaluate("ade20k", pred2, data, EvalOptions(shots=2, seeds=(1000, 2000)))
    assert all(len(c["images"]) in (1, 2) and c["ensemble"] == "feature" for c in pred2.calls if len(c["images"]) > 1)


def test_ade20k_tuned_prompt(tmp_path):
    data = write_ade(tmp_path / "ade")
    path, model = _learned_prompt(tmp_path, classes=(7, 1))
    pred = FakePredictor(step=100, model=model)
    r = evaluate("ade20k", pred, data, EvalOptions(prompt_file=path))
    # The fake answers label 2 where red is 255 (v1: the category-1 rows and half the 'other' rows), which the
    # prompt maps to category 1: IoU 1. Category 2 (100 px in v2) and category 5 (v1 rows 4-7, 40 px) are
    # answered as background: IoU 0, Acc 0. mIoU = mAcc = 1/3.
    assert pred.calls[0]["num_labels"] == 2
    assert r.metrics["mIoU"] == pytest.approx(100 / 3)
    assert r.metrics["mAcc"] == pytest.approx(100 / 3)
    assert r.paper == {"mIoU": 39.6, "mAcc": 50.7}


def test_ade20k_index_is_cached(tmp_path):
    from seggpt.eval.ade20k import ADEData, category_index

    data = write_ade(tmp_path / "ade")
    reader = ADEData(data / "ADEChallengeData2016")
    first = category_index(reader)
    assert first[1] == ["ADE_train_1", "ADE_train_2"] and first[3] == ["ADE_train_1"]
    (cached,) = (tmp_path / "cache").glob("ade20k-index-*.json")
    # The cache is what a second call reads: alter it and the alteration comes back.
    cached.write_text(cached.read_text().replace("ADE_train_1", "ADE_train_X"))
    assert category_index(reader)[3] == ["ADE_train_X"]
    assert category_index(reader, cache=False) == first


# DAVIS-2017 ----------------------------------------------------------------------------------------------
def test_davis2017(tmp_path):
    data = write_davis(tmp_path)
    vp = FakeVideoPredictor()
    r = evaluate("davis2017", vp, data)
    # Scored frames 1..3. Object 1: J = F = (1, 1, 0); object 2: (1, 0, 1) (absent in f2: empty truth, non-empty
    # answer). Mean 2/3 each; decay with bins (0,1),(1,1),(1,2),(2,2): 1 and -0.5.
    assert vp.calls == 2
    assert r.metrics["J&F-Mean"] == pytest.approx(200 / 3)
    assert r.metrics["J-Mean"] == pytest.approx(200 / 3)
    assert r.metrics["F-Mean"] == pytest.approx(200 / 3)
    assert r.metrics["J-Decay"] == pytest.approx(25.0)
    assert r.metrics["F-Recall"] == pytest.approx(200 / 3)
    assert r.details["objects"] == 4


# CamVid --------------------------------------------------------------------------------------------------
def _write_camvid(root, red_classes):
    """Six training and two val images, 4 x 24: columns 2c..2c+1 hold class c (0..10), the last two void. An
    image's red channel is 255 over the classes in ``red_classes[stem]`` and over the void columns, else 0: the
    fake predictor paints just those, whichever class it is asked for."""
    ids = np.repeat(np.minimum(np.arange(24) // 2, 11)[None], 4, axis=0)
    stems = {"train": [f"t{i}" for i in range(6)], "val": ["v0", "v1"]}
    for split, names in stems.items():
        for stem in names:
            red = np.where(np.isin(ids, list(red_classes.get(stem, ())) + [11]), 255, 0)
            save_png(root / split / f"{stem}.png", rgb_from_red(red))
            save_png(root / f"{split}annot" / f"{stem}.png", ids)
    return root


def test_camvid_val_targets_and_void_ignored(tmp_path):
    data = _write_camvid(tmp_path / "camvid", {"v0": [0], "v1": [0]})
    pred = FakePredictor()
    r = evaluate("camvid", pred, data)
    # Every class is asked once; only class 0 is painted where it is (void columns painted too, but ignored):
    # IoU 1 for class 0, 0 for the other 10.
    assert len(pred.calls) == 11
    assert r.metrics["mIoU"] == pytest.approx(100 / 11)
    assert r.details["class_iou"]["sky"] == pytest.approx(100.0)
    assert r.protocol["targets"] == "val (2 images)"
    assert all(stem.startswith("t") for stems in r.protocol["examples"].values() for stem in stems)


def test_camvid_split_file_takes_targets_from_train(tmp_path):
    data = _write_camvid(tmp_path / "camvid", {"t1": [0, 3], "t4": [0, 3]})
    split = tmp_path / "dev.txt"
    split.write_text("t4\nt1\n")
    r = evaluate("camvid", FakePredictor(), data, EvalOptions(split_file=split, seed=3))
    # Targets t1 and t4 (val, painted nowhere, would score 0): every answer paints the sky and road columns, so
    # sky and road each get IoU 2/4 and the rest 0.
    assert r.details["class_iou"]["sky"] == pytest.approx(50.0)
    assert r.details["class_iou"]["road"] == pytest.approx(50.0)
    assert r.metrics["mIoU"] == pytest.approx(100 / 11)
    assert "2 images" in r.protocol["targets"]
    examples = {stem for stems in r.protocol["examples"].values() for stem in stems}
    assert examples and examples.isdisjoint({"t1", "t4"})


@pytest.mark.parametrize(
    ("lines", "message"), [("t1\nnope\n", "not in"), ("".join(f"t{i}\n" for i in range(6)), "some but not all")]
)
def test_camvid_bad_split_file(tmp_path, lines, message):
    data = _write_camvid(tmp_path / "camvid", {})
    split = tmp_path / "dev.txt"
    split.write_text(lines)
    with pytest.raises(ValueError, match=message):
        evaluate("camvid", FakePredictor(), data, EvalOptions(split_file=split))


def test_camvid_dev_split_is_shipped():
    from pathlib import Path

    lines = (Path(__file__).parents[1] / "configs" / "splits" / "camvid_dev.txt").read_text().split()
    assert len(lines) == 92 and len(set(lines)) == 92


# CVC-ClinicDB and folders --------------------------------------------------------------------------------
def test_clinicdb(tmp_path):
    data = write_clinicdb(tmp_path)
    r = evaluate("clinicdb", FakePredictor(), data, EvalOptions(extra={"prompts": ["1"]}))
    # Targets 2 (IoU 1), 3 (8 of 16 px: IoU 1/2, Dice 2/3), 4 (nothing, nothing: 1).
    assert r.metrics["mIoU"] == pytest.approx(100 * 2.5 / 3)
    assert r.metrics["mDice"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 3)
    assert r.metrics["IoU (pixels summed)"] == pytest.approx(75.0)
    # Background summed: I 48 + 48 + 64, U 48 + 56 + 64.
    assert r.metrics["FB-IoU"] == pytest.approx(100 * (160 / 168 + 0.75) / 2)
    r2 = evaluate("clinicdb", FakePredictor(), data, EvalOptions(shots=2))
    assert len(r2.protocol["examples"]) == 2 and r2.protocol["targets"] == 2


def test_user_folder_with_a_learned_prompt(tmp_path):
    data = write_user_folder(tmp_path / "f")
    path, model = _learned_prompt(tmp_path, classes=(2, 1))  # predicted 1 is label 2, predicted 2 is label 1
    r = evaluate("folder", FakePredictor(step=100, model=model), data, EvalOptions(prompt_file=path))
    # Every image is a target. Answers (red // 100, clipped to 2) mapped through (2, 1):
    # a: rows 0-1 red 100 -> 1 -> label 2 (true 1), rows 2-3 red 200 -> 2 -> label 1 (true 2): all wrong;
    # b: red 150 -> label 2 (true 1), red 250 -> label 1 (true 2): all wrong; c: red 250 -> label 1 (true 1): right.
    # Label 1: I 16, pred 8 + 8 + 16, true 8 + 8 + 16 -> U 48; label 2: I 0.
    assert r.metrics["mIoU"] == pytest.approx(100 * (16 / 48 + 0) / 2)
    assert r.protocol["targets"] == 3


def test_user_folder_multilabel(tmp_path):
    data = write_user_folder(tmp_path)
    pred = FakePredictor(step=100)
    r = evaluate("folder", pred, data, EvalOptions(extra={"prompts": ["a"]}))
    # Label 1: 8 px right in b, 16 px of c answered 2 -> IoU 8/24; label 2: 8 right, 16 wrong -> 8/24.
    # Acc: label 1 8/24, label 2 8/8.
    assert pred.calls[0]["masks"][0].max() == 2
    assert r.metrics["mIoU"] == pytest.approx(100 / 3)
    assert r.metrics["mAcc"] == pytest.approx(100 * (1 / 3 + 1) / 2)


# Layout errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fss1000", "coco20i", "pascal5i", "ade20k", "davis2017", "clinicdb", "folder"])
def test_missing_or_malformed_folder_names_the_layout(tmp_path, name):
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        evaluate(name, FakePredictor(), tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        evaluate(name, FakePredictor(), tmp_path / "empty")


def test_malformed_coco_json(tmp_path):
    (tmp_path / "val2014").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2014.json").write_text("{not json")
    with pytest.raises(FileNotFoundError, match="not a COCO annotation file"):
        evaluate("coco20i", FakePredictor(), tmp_path)


# Sharded equals unsharded --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "writer", "factory", "options"),
    [
        ("fss1000", write_fss, FakePredictor, EvalOptions()),
        ("coco20i", write_coco, FakePredictor, EvalOptions(folds=(0,), episodes=15)),
        ("pascal5i", write_pascal, FakePredictor, EvalOptions(folds=(0,), episodes=15)),
        ("ade20k", write_ade, FakePredictor, EvalOptions(seeds=(1000, 2000), batch_size=1)),
        ("davis2017", write_davis, FakeVideoPredictor, EvalOptions()),
        ("clinicdb", write_clinicdb, FakePredictor, EvalOptions(batch_size=1)),
        ("folder", write_user_folder, lambda: FakePredictor(step=100), EvalOptions(batch_size=1)),
    ],
)
def test_sharded_equals_unsharded(tmp_path, name, writer, factory, options):
    data = writer(tmp_path)
    whole = evaluate(name, factory(), data, options)
    for world in (2, 3):
        split = _sharded(name, factory, data, options, world)
        assert split.metrics == whole.metrics
        assert split.details == whole.details
