"""Every dataset reader on a tiny fixture written in exactly the layout the dataset ships in."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seggpt.data.base import IGNORE, DataError, Source
from seggpt.data.registry import build_source

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

RNG = np.random.default_rng(0)


def write_image(path: Path, h: int, w: int, fmt: str | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(a).save(path, format=fmt)
    return a


def write_grey(path: Path, a: np.ndarray, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path, format=fmt)


def write_palette_png(path: Path, a: np.ndarray) -> None:
    """A palette PNG whose indices are the class ids (as VOC and LIP ship)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.frombytes("P", (a.shape[1], a.shape[0]), a.astype(np.uint8).tobytes())
    im.putpalette(RNG.integers(0, 256, size=768).astype(np.uint8).tolist())  # colours unrelated to the ids
    im.save(path)


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def check_source(src: Source, size=(16, 16)) -> None:
    """A reader wrapped as a Source yields pairs of the requested size with labels from the reader."""
    for seed in range(4):
        p = src.sample_pair(np.random.default_rng(seed), size)
        assert p.example_image.shape == (*size, 3) and p.example_image.dtype == np.uint8
        assert p.query_labels.shape == size


# COCO family -----------------------------------------------------------------------------------------------
def test_coco_instances_polygons_rle_crowd(tmp_path):
    from pycocotools import mask as mask_utils

    h, w = 20, 30
    write_image(tmp_path / "train2017" / "000000000009.jpg", h, w)
    rle_region = rect(h, w, 12, 18, 2, 10)
    rle = mask_utils.encode(np.asfortranarray(rle_region.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    crowd_region = rect(h, w, 0, 4, 20, 30)
    # Uncompressed RLE (column-major run lengths), as COCO stores crowd regions.
    flat = crowd_region.T.reshape(-1).astype(np.uint8)
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    anns = [
        {"id": 1, "image_id": 9, "category_id": 18, "iscrowd": 0, "area": 80.0, "bbox": [2, 2, 10, 8],
         "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]]},
        {"id": 2, "image_id": 9, "category_id": 1, "iscrowd": 0, "area": 48.0, "bbox": [2, 12, 8, 6],
         "segmentation": rle},
        {"id": 3, "image_id": 9, "category_id": 1, "iscrowd": 1, "area": 40.0, "bbox": [20, 0, 10, 4],
         "segmentation": {"counts": runs, "size": [h, w]}},
    ]  # fmt: skip
    data = {
        "images": [{"id": 9, "file_name": "000000000009.jpg", "height": h, "width": w}],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
        "annotations": anns,
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    from seggpt.data.readers.coco import CocoInstances

    ds = CocoInstances(tmp_path, "train2017")
    image, labels = ds.load(0)
    assert image.shape == (h, w, 3) and labels.shape == (h, w)
    poly_id = labels[5, 6]
    assert poly_id > 0 and (labels[3:9, 3:11] == poly_id).all()
    assert labels[14, 5] > 0 and labels[14, 5] != poly_id
    assert (labels[rle_region] == labels[14, 5]).all()
    assert (labels[crowd_region] == IGNORE).all()
    assert labels[19, 29] == 0
    check_source(build_source({"type": "coco_instance", "root": str(tmp_path)}))

    data["annotations"][0]["category_id"] = 99
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="unknown category id 99"):
        CocoInstances(tmp_path, "train2017").load(0)


def test_coco_instances_size_mismatch_names_file(tmp_path):
    write_image(tmp_path / "train2017" / "a.jpg", 10, 12)
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 4.0, "bbox": [0, 0, 2, 2],
                         "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}],
    }  # fmt: skip
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    from seggpt.data.readers.coco import CocoInstances

    with pytest.raises(DataError, match=r"size mismatch: image .*a\.jpg"):
        CocoInstances(tmp_path).load(0)


def panoptic_png(seg: np.ndarray) -> np.ndarray:
    return np.stack([seg % 256, (seg // 256) % 256, seg // 65536], axis=-1).astype(np.uint8)


def test_coco_panoptic_ids_from_rgb(tmp_path):
    h, w = 16, 20
    write_image(tmp_path / "val2017" / "000000000139.jpg", h, w)
    seg = np.zeros((h, w), np.int64)
    seg[:8] = 300  # R=44, G=1
    seg[8:, :10] = 70000  # R=112, G=17, B=1
    png = tmp_path / "annotations" / "panoptic_val2017" / "000000000139.png"
    png.parent.mkdir(parents=True)
    Image.fromarray(panoptic_png(seg)).save(png)
    data = {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "height": h, "width": w}],
        "annotations": [{"image_id": 139, "file_name": "000000000139.png",
                         "segments_info": [{"id": 300, "category_id": 7, "iscrowd": 0},
                                           {"id": 70000, "category_id": 5, "iscrowd": 0}]}],
        "categories": [{"id": 5, "name": "a", "isthing": 1}, {"id": 7, "name": "b", "isthing": 0}],
    }  # fmt: skip
    (tmp_path / "annotations" / "panoptic_val2017.json").write_text(json.dumps(data))
    from seggpt.data.readers.coco import CocoPanoptic

    ds = CocoPanoptic(tmp_path, "val2017")
    _, labels = ds.load(0)
    # Categories 5 and 7 are the 1st and 2nd sorted ids -> classes 1 and 2; segment id 0 (VOID) is ignored.
    assert (labels[:8] == 2).all() and (labels[8:, :10] == 1).all() and (labels[8:, 10:] == IGNORE).all()
    assert ds.classes(0) == {1, 2}
    check_source(build_source({"type": "coco_panoptic", "root": str(tmp_path), "split": "val2017"}))

    seg[0, 0] = 5  # a segment the JSON does not list
    Image.fromarray(panoptic_png(seg)).save(png)
    with pytest.raises(DataError, match=r"segment ids \[5\].*000000000139\.png"):
        ds.load(0)


def test_coco_stuff(tmp_path):
    h, w = 12, 14
    write_image(tmp_path / "images" / "train2017" / "000000000025.jpg", h, w)
    lab = np.zeros((h, w), np.uint8)
    lab[:4] = 16
    lab[4:8] = 255
    write_grey(tmp_path / "annotations" / "train2017" / "000000000025.png", lab)
    from seggpt.data.readers.coco import CocoStuff

    _, labels = CocoStuff(tmp_path).load(0)
    assert (labels[:4] == 17).all() and (labels[4:8] == IGNORE).all() and (labels[8:] == 1).all()
    lab[0, 0] = 200
    write_grey(tmp_path / "annotations" / "train2017" / "000000000025.png", lab)
    with pytest.raises(DataError, match=r"unknown class ids \[200\].*000000000025\.png"):
        CocoStuff(tmp_path).load(0)


def test_paco_parts_over_objects(tmp_path):
    h, w = 20, 20
    write_image(tmp_path / "coco" / "train2017" / "000000000042.jpg", h, w)
    data = {
        "images": [{"id": 42, "file_name": "train2017/000000000042.jpg", "height": h, "width": w}],
        "categories": [{"id": 3, "name": "mug", "supercategory": "OBJECT"},
                       {"id": 40, "name": "mug:handle", "supercategory": "PART"}],
        "annotations": [
            {"id": 2, "image_id": 42, "category_id": 40, "iscrowd": 0, "area": 16.0, "bbox": [4, 4, 4, 4],
             "segmentation": [[4, 4, 8, 4, 8, 8, 4, 8]]},
            {"id": 1, "image_id": 42, "category_id": 3, "iscrowd": 0, "area": 196.0, "bbox": [2, 2, 14, 14],
             "segmentation": [[2, 2, 16, 2, 16, 16, 2, 16]]},
        ],
    }  # fmt: skip
    ann = tmp_path / "paco" / "annotations" / "paco_lvis_v1_train.json"
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps(data))
    from seggpt.data.readers.coco import Paco

    ds = Paco(tmp_path / "paco", tmp_path / "coco")
    _, labels = ds.load(0)
    assert labels[6, 6] == 2 and labels[12, 12] == 1 and labels[0, 0] == 0
    assert ds.classes(0) == {1, 2}


# Scenes ----------------------------------------------------------------------------------------------------
def test_ade20k_and_unknown_ids(tmp_path):
    for k in range(2):
        write_image(tmp_path / "images" / "training" / f"ADE_train_0000000{k}.jpg", 10, 12)
        lab = np.zeros((10, 12), np.uint8)
        lab[:5] = 150
        lab[5:, :6] = 3 + k
        write_grey(tmp_path / "annotations" / "training" / f"ADE_train_0000000{k}.png", lab)
    from seggpt.data.readers.scenes import ADE20K

    ds = ADE20K(tmp_path)
    _, labels = ds.load(1)
    assert (labels[:5] == 150).all() and (labels[5:, :6] == 4).all()
    src = build_source({"type": "ade20k", "root": str(tmp_path)})
    assert src.class_items[150] == [0, 1]
    check_source(src)
    lab[0, 0] = 151
    write_grey(tmp_path / "annotations" / "training" / "ADE_train_00000001.png", lab)
    with pytest.raises(DataError, match=r"unknown class ids \[151\] in .*ADE_train_00000001\.png"):
        ds.load(1)
    (tmp_path / "annotations" / "training" / "ADE_train_00000001.png").unlink()
    with pytest.raises(DataError, match=r"ADE_train_00000001\.png does not exist"):
        ds.load(1)


def test_voc_with_sbd(tmp_path):
    import scipy.io

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    write_image(voc / "JPEGImages" / "2007_000032.jpg", 10, 12)
    lab = np.zeros((10, 12), np.uint8)
    lab[2:6, 2:6] = 15
    lab[2:6, 6] = 255
    lab[7:, :] = 1
    write_palette_png(voc / "SegmentationClass" / "2007_000032.png", lab)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n")
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    write_image(sbd / "img" / "2008_000002.jpg", 8, 9)
    seg = np.zeros((8, 9), np.uint8)
    seg[:4] = 20
    (sbd / "cls").mkdir(parents=True)
    scipy.io.savemat(
        sbd / "cls" / "2008_000002.mat",
        {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros((20, 1), object), "CategoriesPresent": np.array([20])}},
    )
    (sbd / "train.txt").write_text("2008_000002\n2007_000033\n")  # 2007_000033 is VOC val: held out
    (sbd / "val.txt").write_text("2007_000032\n")  # already in VOC train: the VOC PNG is used
    from seggpt.data.readers.scenes import VOC

    ds = VOC(voc, "train", sbd_root=sbd)
    assert len(ds) == 2
    _, labels = ds.load(0)
    assert (labels[2:6, 2:6] == 15).all() and (labels[2:6, 6] == IGNORE).all() and (labels[7:] == 1).all()
    _, labels = ds.load(1)
    assert labels.shape == (8, 9) and (labels[:4] == 20).all() and (labels[4:] == 0).all()
    check_source(build_source({"type": "voc", "root": str(voc), "sbd_root": str(sbd)}))
    assert len(VOC(voc, "train")) == 1


def test_cityscapes_train_ids(tmp_path):
    stem = "aachen_000000_000019"
    write_image(tmp_path / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png", 8, 16)
    lab = np.zeros((8, 16), np.uint8)  # 0 = unlabeled (void)
    lab[:, :4] = 7  # road -> trainId 0
    lab[:, 4:8] = 26  # car -> trainId 13
    lab[:, 8:12] = 33  # bicycle -> trainId 18
    write_grey(tmp_path / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png", lab)
    from seggpt.data.readers.scenes import Cityscapes

    _, labels = Cityscapes(tmp_path).load(0)
    assert (labels[:, :4] == 1).all() and (labels[:, 4:8] == 14).all() and (labels[:, 8:12] == 19).all()
    assert (labels[:, 12:] == IGNORE).all()
    check_source(build_source({"type": "cityscapes", "root": str(tmp_path)}))


def test_lip_and_size_mismatch(tmp_path):
    write_image(tmp_path / "TrainVal_images" / "train_images" / "77_471474.jpg", 10, 8)
    write_image(tmp_path / "TrainVal_images" / "train_images" / "99_1.jpg", 10, 8)
    (tmp_path / "TrainVal_images" / "train_id.txt").write_text("77_471474\n99_1\n")
    lab = np.zeros((10, 8), np.uint8)
    lab[3:] = 13
    write_grey(tmp_path / "TrainVal_parsing_annotations" / "train_segmentations" / "77_471474.png", lab)
    write_grey(tmp_path / "TrainVal_parsing_annotations" / "train_segmentations" / "99_1.png", lab[:9])
    from seggpt.data.readers.scenes import LIP

    ds = LIP(tmp_path)
    _, labels = ds.load(0)
    assert (labels[3:] == 13).all() and (labels[:3] == 0).all()
    with pytest.raises(DataError, match=r"size mismatch: image .*99_1\.jpg is 8x10 but its mask .*99_1\.png is 8x9"):
        ds.load(1)


# Aerial ----------------------------------------------------------------------------------------------------
def test_isaid_colours_and_tiles(tmp_path):
    h, w = 40, 50
    write_image(tmp_path / "train" / "images" / "P0001.png", h, w)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:10] = (0, 0, 63)  # ship
    rgb[30:, 40:] = (0, 127, 255)  # plane
    mpath = tmp_path / "train" / "Semantic_masks" / "images" / "P0001_instance_color_RGB.png"
    mpath.parent.mkdir(parents=True)
    Image.fromarray(rgb).save(mpath)
    from seggpt.data.readers.aerial import ISAID

    whole = ISAID(tmp_path, tile=None)
    _, labels = whole.load(0)
    assert (labels[:10] == 1).all() and (labels[30:, 40:] == 14).all() and labels[20, 20] == 0
    tiled = ISAID(tmp_path, tile=32)
    assert len(tiled) == 4
    img, labels = tiled.load(3)
    assert img.shape == (8, 18, 3) and (labels[-2:, -10:] == 14).all()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(mpath)
    with pytest.raises(DataError, match=r"\(1, 2, 3\).*P0001_instance_color_RGB\.png"):
        whole.load(0)


def test_loveda_and_aerial_mixture(tmp_path):
    lab = np.array([[0, 1, 2, 7]] * 4, np.uint8)
    for scene in ("Urban", "Rural"):
        write_image(tmp_path / "loveDA" / "Train" / scene / "images_png" / "0.png", 4, 4)
        write_grey(tmp_path / "loveDA" / "Train" / scene / "masks_png" / "0.png", lab)
    from seggpt.data.readers.aerial import LoveDA

    ds = LoveDA(tmp_path / "loveDA")
    assert len(ds) == 2
    _, labels = ds.load(0)
    assert labels[0].tolist() == [IGNORE, 0, 1, 6]
    # iSAID + LoveDA as one source: LoveDA's classes come after iSAID's 15.
    write_image(tmp_path / "iSAID" / "train" / "images" / "P0002.png", 6, 6)
    mp = tmp_path / "iSAID" / "train" / "Semantic_masks" / "images" / "P0002_instance_color_RGB.png"
    mp.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(mp)
    src = build_source(
        {"type": "aerial", "isaid_root": str(tmp_path / "iSAID"), "loveda_root": str(tmp_path / "loveDA")}
    )
    _, labels = src.dataset.load(1)
    assert labels[0].tolist() == [IGNORE, 0, 16, 21]


# Retinal vessels -------------------------------------------------------------------------------------------
def test_vessel_sets_as_they_ship(tmp_path):
    h, w = 12, 14
    vessel = np.zeros((h, w), np.uint8)
    vessel[5:7] = 255
    # DRIVE: .tif image, .gif manual annotation.
    write_image(tmp_path / "DRIVE" / "training" / "images" / "21_training.tif", h, w, fmt="TIFF")
    write_grey(tmp_path / "DRIVE" / "training" / "1st_manual" / "21_manual1.gif", vessel, fmt="GIF")
    # STARE: gzipped .ppm image, plain .ppm label.
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PPM")
    (tmp_path / "STARE" / "stare-images").mkdir(parents=True)
    (tmp_path / "STARE" / "stare-images" / "im0001.ppm.gz").write_bytes(gzip.compress(buf.getvalue()))
    lab_rgb = np.repeat(vessel[..., None], 3, axis=2)
    (tmp_path / "STARE" / "labels-ah").mkdir(parents=True)
    Image.fromarray(lab_rgb).save(tmp_path / "STARE" / "labels-ah" / "im0001.ah.ppm", format="PPM")
    # CHASE_DB1: .jpg with _1stHO.png in one folder.
    write_image(tmp_path / "CHASE_DB1" / "Image_01L.jpg", h, w)
    write_grey(tmp_path / "CHASE_DB1" / "Image_01L_1stHO.png", vessel)
    # HRF: .JPG image, bilevel .tif manual annotation.
    write_image(tmp_path / "HRF" / "images" / "01_dr.JPG", h, w, fmt="JPEG")
    (tmp_path / "HRF" / "manual1").mkdir(parents=True)
    Image.fromarray(vessel > 0).save(tmp_path / "HRF" / "manual1" / "01_dr.tif")
    src = build_source(
        {
            "type": "vessels",
            "chase_db1": str(tmp_path / "CHASE_DB1"),
            "drive": str(tmp_path / "DRIVE"),
            "hrf": str(tmp_path / "HRF"),
            "stare": str(tmp_path / "STARE"),
        }
    )
    assert len(src) == 4
    for i in range(4):
        image, labels = src.dataset.load(i)
        assert image.shape == (h, w, 3), src.dataset.describe(i)
        assert (labels == (vessel > 0)).all(), src.dataset.describe(i)
    check_source(src)


# FSS-1000 and user folders ---------------------------------------------------------------------------------
def test_fss1000_class_folders(tmp_path):
    for cls, n in (("ab_wheel", 2), ("abacus", 1)):
        for k in range(1, n + 1):
            write_image(tmp_path / cls / f"{k}.jpg", 8, 8)
            m = np.zeros((8, 8), np.uint8)
            m[:4] = 255
            m[4, 0] = 100  # below 128: background after binarisation
            write_grey(tmp_path / cls / f"{k}.png", m)
    from seggpt.data.readers.fss import FSS1000

    ds = FSS1000(tmp_path)
    assert ds.class_names == ["ab_wheel", "abacus"] and len(ds) == 3
    _, labels = ds.load(2)  # abacus/1
    assert (labels[:4] == 2).all() and (labels[4:] == 0).all()
    src = build_source({"type": "fss1000", "root": str(tmp_path), "p_same": 0.0})
    # "Another image with the class" stays within the folder; abacus has one image, so it falls back.
    modes = {src.sample_pair(np.random.default_rng(s), (8, 8)).meta["mode"] for s in range(20)}
    assert modes == {"other", "same_fallback"}
    (tmp_path / "abacus" / "1.png").unlink()
    with pytest.raises(DataError, match=r"abacus/1\.png does not exist"):
        ds.load(2)


def test_folder_reader(tmp_path):
    from seggpt.data.folder import FolderDataset

    write_image(tmp_path / "images" / "a.jpg", 6, 6)
    write_image(tmp_path / "images" / "b.png", 6, 6)
    write_grey(tmp_path / "masks" / "a.png", np.array([[0, 1, 2, 255, 0, 0]] * 6))
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[:3] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "masks" / "b.png")
    ds = FolderDataset(tmp_path / "images", tmp_path / "masks")
    _, labels = ds.load(0)
    assert labels[0].tolist() == [0, 1, 2, IGNORE, 0, 0]
    _, labels = ds.load(1)
    assert len(np.unique(labels[:3])) == 1 and labels[0, 0] > 0 and (labels[3:] == 0).all()
    write_image(tmp_path / "images" / "c.jpg", 6, 6)
    with pytest.raises(FileNotFoundError, match=r"c\.jpg"):
        FolderDataset(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(FileNotFoundError, match="masks"):
        FolderDataset(tmp_path / "images", tmp_path / "nope")
    (tmp_path / "masks" / "c.png").write_text("not a picture")  # read through the package's one image reader
    with pytest.raises(DataError, match=r"cannot read mask .*c\.png.*complete image file"):
        FolderDataset(tmp_path / "images", tmp_path / "masks").load(2)
