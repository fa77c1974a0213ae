"""scripts/pack_training_data.py: the training parts, shrunk as the readers shrink them, readable by the same
readers, and nothing of the validation parts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import load_script
from test_data_readers import write_grey, write_image, write_palette_png


def _stripes(h, w, values):
    """Label ids in horizontal stripes over the left half."""
    lab = np.zeros((h, w), np.uint8)
    for k, v in enumerate(values):
        lab[k * h // len(values) : (k + 1) * h // len(values), : w // 2] = v
    return lab


@pytest.fixture
def data(tmp_path):
    d, splits = tmp_path / "data", tmp_path / "splits"
    splits.mkdir()
    for stem in ("k1", "k2", "kval"):  # kval: a validation image, not in the split
        write_image(d / "kvasir-seg/images" / f"{stem}.jpg", 530, 620)
        write_grey(d / "kvasir-seg/masks" / f"{stem}.png", _stripes(530, 620, [1]))
    (splits / "kvasir_train.txt").write_text("k1\nk2\n")
    for split in ("train", "val"):
        write_image(d / f"camvid/{split}/c_{split}.jpg", 360, 480)
        write_grey(d / f"camvid/{split}annot/c_{split}.png", _stripes(360, 480, [0, 3, 8, 11]))
    for stem in ("a", "b"):
        write_image(d / "coco128-seg/images/train2017" / f"{stem}.jpg", 480, 640)
        (d / "coco128-seg/labels/train2017").mkdir(parents=True, exist_ok=True)
        (d / "coco128-seg/labels/train2017" / f"{stem}.txt").write_text("3 0.1 0.1 0.5 0.1 0.5 0.6\n")
    (splits / "coco128_train.txt").write_text("a\n")
    for seq in ("seq_train", "seq_val"):
        for f in range(3):
            write_image(d / "davis2016/JPEGImages/480p" / seq / f"{f:05d}.jpg", 480, 854)
            # a palette PNG, as DAVIS ships its annotations
            write_palette_png(d / "davis2016/Annotations/480p" / seq / f"{f:05d}.png", _stripes(480, 854, [1]))
    (splits / "davis2016_train.txt").write_text("seq_train\n")
    return d, splits


def test_pack_holds_the_training_parts_shrunk_and_reads_as_the_originals(tmp_path, data, capsys):
    from seggpt.data.folder import FolderDataset
    from seggpt.data.readers.photos import CamVid, DavisFramePairs, YoloSegmentation

    pack = load_script("pack_training_data", "scripts")
    d, splits = data
    out = tmp_path / "pack"
    assert pack.main(["--data", str(d), "--out", str(out), "--splits", str(splits)]) == 0
    assert "wrote" in capsys.readouterr().out
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "camvid/train/c_train.jpg",
        "camvid/trainannot/c_train.png",
        "coco128-seg/images/train2017/a.jpg",
        "coco128-seg/labels/train2017/a.txt",
        "davis2016/Annotations/480p/seq_train/00000.png",
        "davis2016/Annotations/480p/seq_train/00001.png",
        "davis2016/Annotations/480p/seq_train/00002.png",
        "davis2016/JPEGImages/480p/seq_train/00000.jpg",
        "davis2016/JPEGImages/480p/seq_train/00001.jpg",
        "davis2016/JPEGImages/480p/seq_train/00002.jpg",
        "kvasir-seg/images/k1.jpg",
        "kvasir-seg/images/k2.jpg",
        "kvasir-seg/masks/k1.png",
        "kvasir-seg/masks/k2.png",
    ]
    # Short side 320, as every reader shrinks on reading; labels keep their ids (void 11 too).
    assert Image.open(out / "davis2016/JPEGImages/480p/seq_train/00000.jpg").size == (569, 320)
    assert Image.open(out / "kvasir-seg/images/k1.jpg").size == (374, 320)
    assert Image.open(out / "coco128-seg/images/train2017/a.jpg").size == (427, 320)
    assert set(np.unique(np.asarray(Image.open(out / "camvid/trainannot/c_train.png")))) == {0, 3, 8, 11}
    # The readers read the pack as they read the originals: the same labels, the image within JPEG's error.
    pairs = [
        (CamVid(d / "camvid"), CamVid(out / "camvid")),
        (FolderDataset(d / "kvasir-seg/images", d / "kvasir-seg/masks", split_file=splits / "kvasir_train.txt",
                       max_side=320),
         FolderDataset(out / "kvasir-seg/images", out / "kvasir-seg/masks", max_side=320)),
        (YoloSegmentation(d / "coco128-seg", split_file=splits / "coco128_train.txt"),
         YoloSegmentation(out / "coco128-seg")),
    ]  # fmt: skip
    for original, packed in pairs:
        assert len(original) == len(packed)
        (a, la), (b, lb) = original.load(0), packed.load(0)
        assert a.shape == b.shape
        if isinstance(original, YoloSegmentation):  # polygons drawn at the smaller size: edges move a pixel
            assert (la == lb).mean() > 0.99 and set(np.unique(la)) == set(np.unique(lb))
        else:
            assert np.array_equal(la, lb), type(original).__name__
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 20  # random noise is JPEG's worst case
    video = DavisFramePairs(out / "davis2016", split_file=splits / "davis2016_train.txt")
    assert len(video.frames) == 1 and len(video.frames[0]) == 3


def test_pack_refuses_to_overwrite_and_names_a_missing_folder(tmp_path, data, capsys):
    pack = load_script("pack_training_data", "scripts")
    d, splits = data
    out = tmp_path / "pack"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert pack.main(["--data", str(d), "--out", str(out), "--splits", str(splits)]) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "keep"
    assert pack.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p2")]) == 2
    assert "no data folder" in capsys.readouterr().err
