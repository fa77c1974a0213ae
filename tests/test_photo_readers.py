"""The readers of the real photo sets (CamVid, YOLO segmentation, DAVIS frame pairs, split files), each on a tiny
fixture written in the layout the dataset ships in, with the expected labels built by the test itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seggpt.data.base import IGNORE, INSTANCE, SEMANTIC, DataError
from seggpt.data.folder import FolderDataset
from seggpt.data.readers.photos import CamVid, DavisFramePairs, YoloSegmentation
from seggpt.data.registry import build_source
from test_data_readers import write_grey, write_image, write_palette_png

write_rgb = write_image


def write_ids(path: Path, a: np.ndarray, palette: bool = False) -> None:
    """Class ids as a grey PNG, or as the indices of a palette PNG (as DAVIS ships its annotations)."""
    (write_palette_png if palette else write_grey)(path, a)


def test_camvid_ids_shift_and_void(tmp_path):
    ann = np.zeros((12, 16), np.uint8)
    ann[:4] = 0  # sky
    ann[4:8] = 3  # road
    ann[8:, :8] = 11  # void
    ann[8:, 8:] = 10  # bicyclist
    write_rgb(tmp_path / "train" / "a.png", 12, 16, "PNG")
    write_ids(tmp_path / "trainannot" / "a.png", ann)
    ds = CamVid(tmp_path, "train")
    image, labels = ds.load(0)
    assert image.shape == (12, 16, 3) and len(ds) == 1
    want = np.where(ann == 11, IGNORE, ann.astype(np.int32) + 1)
    np.testing.assert_array_equal(labels, want)
    assert ds.seg_type == SEMANTIC and ds.num_classes == 11


def test_camvid_rejects_unknown_ids_and_missing_annotation(tmp_path):
    write_rgb(tmp_path / "train" / "a.png", 8, 8, "PNG")
    write_ids(tmp_path / "trainannot" / "a.png", np.full((8, 8), 12))
    with pytest.raises(DataError, match="class ids up to 12"):
        CamVid(tmp_path, "train").load(0)
    write_rgb(tmp_path / "train" / "b.png", 8, 8, "PNG")
    with pytest.raises(FileNotFoundError, match="no annotation"):
        CamVid(tmp_path, "train")


def _yolo(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    write_rgb(root / "images" / "train" / "one.jpg", 40, 80)
    write_rgb(root / "images" / "train" / "two.jpg", 40, 80)
    write_rgb(root / "images" / "train" / "empty.jpg", 40, 80)
    (root / "labels" / "train").mkdir(parents=True)
    # A big box of class 2 (x 0.1..0.9, y 0.1..0.9) and a small one of class 0 inside it (x 0.4..0.6, y 0.4..0.6).
    big = "2 0.1 0.1 0.9 0.1 0.9 0.9 0.1 0.9"
    small = "0 0.4 0.4 0.6 0.4 0.6 0.6 0.4 0.6"
    (root / "labels" / "train" / "one.txt").write_text(f"{small}\n{big}\n")
    (root / "labels" / "train" / "two.txt").write_text("5 0.0 0.0 0.5 0.0 0.5 0.5\n")
    (root / "labels" / "train" / "empty.txt").write_text("")
    return root


def test_yolo_semantic_and_instance_polygons(tmp_path):
    root = _yolo(tmp_path)
    sem = YoloSegmentation(root, "train", "semantic", max_side=None)
    assert len(sem) == 2  # the image without objects is left out
    assert sem.classes(0) == {1, 3} and sem.num_classes == 6
    _, labels = sem.load(0)
    assert labels.shape == (40, 80)
    # Inside the small box: class 0 + 1; between the boxes: class 2 + 1; outside: background. The small one is
    # painted over the big one whatever the file order.
    assert labels[20, 40] == 1 and labels[10, 20] == 3 and labels[1, 1] == 0
    ins = YoloSegmentation(root, "train", "instance", max_side=None)
    _, inst = ins.load(0)
    assert ins.seg_type == INSTANCE and ins.classes(0) is None
    assert inst[20, 40] == 2 and inst[10, 20] == 1 and inst[1, 1] == 0
    area = (inst == 1).sum()
    assert abs(area - (0.8 * 0.8 - 0.2 * 0.2) * 40 * 80) < 0.08 * 40 * 80


def test_yolo_split_file_and_bad_lines(tmp_path):
    root = _yolo(tmp_path)
    split = tmp_path / "split.txt"
    split.write_text("two\n")
    ds = YoloSegmentation(root, "train", split_file=split)
    assert len(ds) == 1 and ds.describe(0).endswith("two.jpg")
    split.write_text("two\nthree\n")
    with pytest.raises(FileNotFoundError, match="three"):
        YoloSegmentation(root, "train", split_file=split)
    (root / "labels" / "train" / "two.txt").write_text("5 0.0 0.0 0.5\n")
    with pytest.raises(DataError, match="two.txt:1"):
        YoloSegmentation(root, "train")


def test_folder_split_file_and_cache(tmp_path):
    for stem in ("a", "b", "c"):
        write_rgb(tmp_path / "images" / f"{stem}.jpg", 20, 30)
        write_ids(tmp_path / "masks" / f"{stem}.png", np.eye(20, 30, dtype=np.uint8))
    split = tmp_path / "val.txt"
    split.write_text("c\na\n")
    ds = FolderDataset(tmp_path / "images", tmp_path / "masks", split_file=split, max_side=10)
    assert [Path(p).stem for p, _ in ds.items] == ["c", "a"]
    image, labels = ds.load(0)
    assert image.shape == (10, 15, 3) and labels.shape == (10, 15)  # shrunk to a short side of 10
    assert ds.load(0)[0] is image  # decoded once


def _davis(tmp_path: Path, frames: int = 6) -> Path:
    root = tmp_path / "davis"
    for seq in ("s1", "s2"):
        for t in range(frames):
            write_rgb(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", 24, 32)
            ann = np.zeros((24, 32), np.uint8)
            ann[t : t + 8, 4:12] = 1
            write_ids(root / "Annotations" / "480p" / seq / f"{t:05d}.png", ann, palette=True)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "train.txt").write_text("s1\n")
    return root


def test_davis_frame_pairs_are_two_frames_of_one_sequence(tmp_path):
    root = _davis(tmp_path)
    src = DavisFramePairs(root, max_gap=2)
    assert src.sequences == ["s1"] and len(src) == 6
    for seed in range(20):
        pair = src.sample_pair(np.random.default_rng(seed), (16, 16))
        e, q = (int(Path(f).stem) for f in pair.meta["files"])
        assert all("/s1/" in f for f in pair.meta["files"])
        assert e != q and abs(e - q) <= 2
        assert pair.seg_type == INSTANCE and pair.query_image.shape == (16, 16, 3)
        assert set(np.unique(pair.query_labels)) <= {0, 1}
    again = src.sample_pair(np.random.default_rng(3), (16, 16))
    first = DavisFramePairs(root, max_gap=2).sample_pair(np.random.default_rng(3), (16, 16))
    np.testing.assert_array_equal(again.query_image, first.query_image)  # a pure function of the generator
    split = tmp_path / "seqs.txt"
    split.write_text("s2\n")
    assert DavisFramePairs(root, split_file=split).sequences == ["s2"]


def test_sources_from_config_and_single_class_pairs(tmp_path):
    ann = np.zeros((12, 16), np.uint8)
    ann[:6] = 0
    ann[6:, :8] = 3
    ann[6:, 8:] = 8
    for stem in ("a", "b"):
        write_rgb(tmp_path / "camvid" / "train" / f"{stem}.png", 12, 16, "PNG")
        write_ids(tmp_path / "camvid" / "trainannot" / f"{stem}.png", ann)
    src = build_source({"type": "camvid", "root": str(tmp_path / "camvid"), "p_single": 1.0})
    for seed in range(10):
        pair = src.sample_pair(np.random.default_rng(seed), (12, 16))
        ids = set(np.unique(pair.example_labels)) - {0, IGNORE}
        assert len(ids) == 1 and "single" in pair.meta["mode"]
        assert set(np.unique(pair.query_labels)) - {0, IGNORE} <= ids
    many = build_source({"type": "camvid", "root": str(tmp_path / "camvid"), "p_single": 0.0})
    counts = {
        len(set(np.unique(many.sample_pair(np.random.default_rng(s), (12, 16)).example_labels)) - {0})
        for s in range(10)
    }
    assert max(counts) > 1
    with pytest.raises(ValueError, match="p_single"):
        build_source({"type": "camvid", "root": str(tmp_path / "camvid"), "p_single": 1.5})
    root = _davis(tmp_path)
    assert build_source({"type": "davis_frames", "root": str(root), "max_gap": 3}).max_gap == 3
    assert len(build_source({"type": "yolo", "root": str(_yolo(tmp_path)), "split": "train"})) == 2
