"""Frame sources (folders, video files via PyAV, arrays), DAVIS palette PNGs and overlay videos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seggpt.video_io import davis_palette, open_frames, overlay, read_davis_png, write_davis_png, write_video


def test_davis_palette_is_the_voc_colour_map():
    # The first colours of the PASCAL VOC / DAVIS map as published with those datasets.
    published = [
        (0, 0, 0),
        (128, 0, 0),
        (0, 128, 0),
        (128, 128, 0),
        (0, 0, 128),
        (128, 0, 128),
        (0, 128, 128),
        (128, 128, 128),
        (64, 0, 0),
        (192, 0, 0),
    ]
    pal = davis_palette()
    assert pal.shape == (256, 3)
    assert [tuple(int(v) for v in c) for c in pal[:10]] == published
    assert len({tuple(c) for c in pal}) == 256  # every id its own colour


def test_davis_png_is_a_palette_image_whose_values_are_the_ids(tmp_path):
    labels = np.zeros((7, 9), np.int64)
    labels[1:3, 2:5] = 1
    labels[4:6, 0:3] = 12
    labels[6, 8] = 255
    path = write_davis_png(tmp_path / "00000.png", labels)
    with Image.open(path) as img:
        assert img.mode == "P"
        np.testing.assert_array_equal(np.asarray(img), labels)
        pal = np.asarray(img.getpalette()[:6]).reshape(2, 3)
    np.testing.assert_array_equal(pal, [[0, 0, 0], [128, 0, 0]])
    np.testing.assert_array_equal(read_davis_png(path), labels)
    with pytest.raises(FileExistsError):
        write_davis_png(path, labels)
    write_davis_png(path, labels * 0, overwrite=True)
    assert not read_davis_png(path).any()
    with pytest.raises(ValueError, match="palette PNG"):
        Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "grey.png")
        read_davis_png(tmp_path / "grey.png")


def test_folder_frames_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        Image.fromarray(np.full((4, 6, 3), i, np.uint8)).save(tmp_path / f"f{i}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    src = open_frames(tmp_path)
    assert src.names == ["f1", "f2", "f10"]
    assert [int(f[0, 0, 0]) for f in src] == [1, 2, 10]
    assert len(src) == 3


def test_array_and_list_sources():
    arr = np.zeros((3, 4, 5, 3), np.uint8)
    assert len(list(open_frames(arr))) == 3
    src = open_frames([arr[0], np.zeros((4, 5), np.uint8)])  # grey frames become RGB
    assert [f.shape for f in src] == [(4, 5, 3), (4, 5, 3)]
    assert src.name(1) == "00001"


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_file_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    levels = [30, 90, 150, 210, 120]
    frames = [np.full((32, 48, 3), v, np.uint8) + rng.integers(0, 3, (32, 48, 3), dtype=np.uint8) for v in levels]
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=12)
    src = open_frames(path)
    decoded = list(src)
    assert len(decoded) == 5
    assert decoded[0].shape == (32, 48, 3) and decoded[0].dtype == np.uint8
    # Lossy codecs: each frame comes back near its own level, far from the others.
    means = np.array([float(f.mean()) for f in decoded])
    assert np.abs(means - (np.array(levels) + 1)).max() < 8
    assert src.fps == pytest.approx(12)
    with pytest.raises(FileExistsError):
        write_video(path, frames)


def test_video_errors(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(ValueError, match="cannot read"):
        open_frames(bad)
    with pytest.raises(FileNotFoundError):
        open_frames(tmp_path / "missing.mp4")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "one.png")
    with pytest.raises(ValueError, match="single image"):
        open_frames(tmp_path / "one.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        open_frames(empty)


def test_overlay_fills_and_outlines_objects_only():
    image = np.full((12, 12, 3), 100, np.uint8)
    labels = np.zeros((12, 12), np.int64)
    labels[2:9, 2:9] = 1
    out = overlay(image, labels, alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background untouched
    np.testing.assert_array_equal(out[5, 5], [178, 50, 178])  # inside: halfway to magenta (255, 0, 255)
    np.testing.assert_array_equal(out[2, 5], [255, 0, 255])  # the object's edge: a contour in its full colour
    np.testing.assert_array_equal(out[9, 5], [100, 100, 100])  # just outside: untouched
