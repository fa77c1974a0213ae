"""Reading every image and mask kind users have, and writing outputs safely (seggpt.io)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seggpt.io import (
    atomic_write,
    colours_to_labels,
    list_images,
    load_mask_array,
    read_image,
    read_mask,
    save_label_png,
)


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (12, 17, 3), dtype=np.uint8)


# Images ---------------------------------------------------------------------------------------------------
def test_read_image_rgb_from_array_pil_and_file(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    for src in (rgb, Image.fromarray(rgb), tmp_path / "a.png", str(tmp_path / "a.png")):
        out = read_image(src)
        assert out.dtype == np.uint8 and out.shape == (12, 17, 3)
        np.testing.assert_array_equal(out, rgb)


def test_read_image_grey_rgba_palette_and_bool(tmp_path, rgb):
    grey = rgb[..., 0]
    for src in (grey, grey[..., None], Image.fromarray(grey)):
        np.testing.assert_array_equal(read_image(src), np.repeat(grey[..., None], 3, axis=2))
    rgba = np.concatenate([rgb, np.full((12, 17, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(read_image(rgba), rgb)
    np.testing.assert_array_equal(read_image(Image.fromarray(rgba, "RGBA")), rgb)
    pal = Image.fromarray(rgb).quantize(8)
    np.testing.assert_array_equal(read_image(pal), np.asarray(pal.convert("RGB")))
    b = np.zeros((4, 5), bool)
    b[1, 2] = True
    assert read_image(b)[1, 2].tolist() == [255, 255, 255] and read_image(b)[0, 0].tolist() == [0, 0, 0]


def test_read_image_16bit_file_and_floats(tmp_path):
    v = (np.arange(20).reshape(4, 5) * 13 * 257).astype(np.uint16)  # multiples of 257: exact 8-bit values
    Image.fromarray(v).save(tmp_path / "deep.png")  # a 16-bit grey PNG (mode I;16)
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(out[..., 0], v // 257)
    np.testing.assert_array_equal(read_image(np.stack([v] * 3, -1))[..., 1], v // 257)
    f = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    np.testing.assert_array_equal(read_image(f)[..., 2], np.rint(f * 255).astype(np.uint8))


def test_read_image_exif_orientation(tmp_path):
    a = np.zeros((10, 20, 3), np.uint8)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: viewers show it 10 wide, 20 high
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert read_image(tmp_path / "rot.jpg").shape == (20, 10, 3)


def test_read_image_errors_name_the_file(tmp_path, rgb):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    Image.fromarray(rgb).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="junk.jpg"):
        read_image(tmp_path / "junk.jpg")
    with pytest.raises(ValueError, match="shape"):
        read_image(np.zeros((4, 5, 7), np.uint8))
    with pytest.raises(ValueError, match="folder"):
        read_image(tmp_path)


# Masks ----------------------------------------------------------------------------------------------------
@pytest.fixture
def labels():
    lab = np.zeros((9, 11), np.int64)
    lab[1:4, 2:6] = 1
    lab[5:8, 1:3] = 2
    lab[6:9, 7:11] = 3
    return lab


def test_binary_masks_any_encoding(tmp_path, labels):
    fg = labels > 0
    Image.fromarray((fg * 255).astype(np.uint8)).save(tmp_path / "m255.png")
    Image.fromarray(fg).save(tmp_path / "m1.png")  # mode "1"
    Image.fromarray(fg.astype(np.uint8)).save(tmp_path / "m01.png")
    for src in (tmp_path / "m255.png", tmp_path / "m1.png", tmp_path / "m01.png", fg, fg.astype(np.float32)):
        np.testing.assert_array_equal(read_mask(src), fg.astype(np.int64), err_msg=str(src))
    Image.fromarray((fg * 65535).astype(np.uint16)).save(tmp_path / "m16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m16.png"), fg)
    white_on_black = np.repeat((fg * 255).astype(np.uint8)[..., None], 3, axis=2)
    np.testing.assert_array_equal(read_mask(white_on_black), fg)


def test_label_maps_kept(tmp_path, labels):
    Image.fromarray(labels.astype(np.uint8)).save(tmp_path / "lab.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "lab.png"), labels)
    np.testing.assert_array_equal(read_mask(labels), labels)
    big = labels * 400  # 16-bit label PNG
    Image.fromarray(big.astype(np.uint16)).save(tmp_path / "lab16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "lab16.png"), big)


def test_palette_png_indices_and_void(tmp_path, labels):
    lab = labels.copy()
    lab[0, :] = 255  # VOC "void" border
    img = Image.fromarray(lab.astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [224, 224, 192] * 252)
    img.save(tmp_path / "voc.png")
    out = read_mask(tmp_path / "voc.png")
    expected = labels.copy()
    expected[0, :] = 0
    np.testing.assert_array_equal(out, expected)


def test_colour_masks_with_transformers_palette_read_back_exactly(labels):
    from transformers.models.seggpt.image_processing_pil_seggpt import build_palette as hf_palette

    for n in (3, 9, 30):
        pal = np.array(hf_palette(n), np.uint8)
        lab = labels * (n // 3)  # labels 0, n/3, 2n/3, n: not a prefix of the palette
        np.testing.assert_array_equal(read_mask(pal[lab]), lab, err_msg=f"n={n}")


def test_arbitrary_colours_numbered_in_decreasing_rgb(labels):
    colours = np.array([[0, 0, 0], [10, 200, 30], [200, 10, 10], [10, 200, 200]], np.uint8)
    out = read_mask(colours[labels])
    # decreasing (R, G, B): (200, 10, 10) -> 1, (10, 200, 200) -> 2, (10, 200, 30) -> 3
    np.testing.assert_array_equal(out, np.array([0, 3, 1, 2])[labels])


def test_colours_numbered_jointly(labels):
    colours = np.array([[0, 0, 0], [10, 200, 30], [200, 10, 10], [10, 200, 200]], np.uint8)
    only_green = np.where(labels == 1, 1, 0)
    maps, table = colours_to_labels([colours[labels], colours[only_green]])
    green = maps[0][labels == 1][0]
    assert (maps[1][only_green == 1] == green).all()  # the same colour is the same label in both
    assert table[green].tolist() == [10, 200, 30] and table[0].tolist() == [0, 0, 0]


def test_rgba_cutout_and_lossy_grey(tmp_path, labels):
    fg = labels > 0
    cut = np.zeros(labels.shape + (4,), np.uint8)
    cut[..., :3] = 90
    cut[..., 3] = fg * 255
    np.testing.assert_array_equal(read_mask(cut), fg)
    noisy = np.clip(fg * 255 + np.random.default_rng(0).integers(-30, 30, fg.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "m.jpg", quality=95)
    assert (read_mask(tmp_path / "m.jpg") == fg).mean() > 0.95


def test_mask_errors(tmp_path):
    with pytest.raises(ValueError, match="negative"):
        read_mask(np.array([[0, -1]]))
    with pytest.raises(ValueError, match="fractional"):
        read_mask(np.array([[0.0, 2.5]]))
    with pytest.raises(FileNotFoundError, match="gone.png"):
        read_mask(tmp_path / "gone.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match="bad.png"):
        load_mask_array(tmp_path / "bad.png")


# Writing --------------------------------------------------------------------------------------------------
def test_atomic_write_refuses_overwrite_and_cleans_up(tmp_path):
    dst = tmp_path / "sub" / "out.txt"
    atomic_write(dst, lambda tmp: open(tmp, "w").write("one"))  # noqa: SIM115
    with pytest.raises(FileExistsError, match="overwrite"):
        atomic_write(dst, lambda tmp: open(tmp, "w").write("two"))  # noqa: SIM115

    def fail(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(dst, fail, overwrite=True)
    assert dst.read_text() == "one"
    assert sorted(p.name for p in dst.parent.iterdir()) == ["out.txt"]  # no temporary left behind
    atomic_write(dst, lambda tmp: open(tmp, "w").write("two"), overwrite=True)  # noqa: SIM115
    assert dst.read_text() == "two"


def test_label_png_round_trip(tmp_path, labels):
    pal = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    save_label_png(labels, tmp_path / "l.png", pal)
    img = Image.open(tmp_path / "l.png")
    assert img.mode == "P"
    np.testing.assert_array_equal(np.asarray(img), labels)
    np.testing.assert_array_equal(np.asarray(img.convert("RGB")), pal[labels])
    save_label_png(labels * 300, tmp_path / "l16.png", pal)
    np.testing.assert_array_equal(read_mask(tmp_path / "l16.png"), labels * 300)


def test_list_images(tmp_path):
    for name in ("b.jpg", "a.PNG", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpg"]


def test_lossy_colour_mask_warns(tmp_path, labels):
    colours = np.array([[0, 0, 0], [200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)
    Image.fromarray(colours[labels]).save(tmp_path / "c.jpg")
    with pytest.warns(UserWarning, match="save colour masks as PNG"):
        read_mask(tmp_path / "c.jpg")


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    import os
    from pathlib import Path

    from seggpt.io import atomic_write

    umask = os.umask(0o022)
    try:
        dst = atomic_write(tmp_path / "out.txt", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(umask)
    assert dst.read_text() == "x"
    assert dst.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary left behind


def test_reports_and_videos_get_ordinary_permissions(tmp_path):
    """Every writer that builds its file under a private temporary name hands over an ordinary file."""
    import os

    import numpy as np

    from seggpt.eval.registry import BenchmarkResult
    from seggpt.eval.report import write_report
    from seggpt.video_io import write_video

    umask = os.umask(0o022)
    try:
        jp, mp = write_report(BenchmarkResult("synthcontext", {"mIoU": 1.0}), tmp_path / "r.json")
        video = write_video(tmp_path / "v.avi", [np.zeros((8, 8, 3), np.uint8)] * 2, fps=4)
    finally:
        os.umask(umask)
    for p in (jp, mp, video):
        assert p.stat().st_mode & 0o777 == 0o644, p
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md", "v.avi"]


def test_the_umask_is_read_without_being_changed(monkeypatch):
    import os

    from seggpt import io

    umask = os.umask(0o027)
    try:
        calls = []
        real = os.umask
        monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or real(m))
        assert io._umask() == 0o027
        if os.path.exists("/proc/self/status"):
            assert calls == []  # read from the kernel, never set
    finally:
        os.umask(umask)


# Large images: one reading path, reduced decoding, streamed PNGs (issue #27) -----------------------------
def test_png_writer_bands_read_back_exactly(tmp_path):
    from seggpt.io import PngWriter, atomic_file

    rng = np.random.default_rng(0)
    pal = rng.integers(0, 256, (7, 3), dtype=np.uint8)
    cases = {
        "P": rng.integers(0, 7, (37, 29)),
        "L": rng.integers(0, 256, (37, 29)),
        "I;16": rng.integers(0, 65536, (37, 29)),
        "RGB": rng.integers(0, 256, (37, 29, 3)),
    }
    for mode, a in cases.items():
        path = tmp_path / f"{mode.replace(';', '')}.png"
        with atomic_file(path) as tmp, open(tmp, "wb") as f, PngWriter(f, 29, 37, mode, pal) as png:
            for y in (0, 5, 6, 20):  # uneven bands, one of a single row
                png.write(a[y : {0: 5, 5: 6, 6: 20, 20: 37}[y]])
        img = Image.open(path)
        np.testing.assert_array_equal(np.asarray(img).astype(np.int64), a)
        if mode == "P":
            np.testing.assert_array_equal(np.asarray(img.convert("RGB")), pal[a])
    with (
        pytest.raises(ValueError, match="closed after 3 of its 4 rows"),
        open(tmp_path / "x.png", "wb") as f,
        PngWriter(f, 2, 4, "L") as png,
    ):
        png.write(np.zeros((3, 2)))
        png.close()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_open_image_refuses_before_decoding_and_names_the_file(tmp_path):
    from seggpt.io import open_image

    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.png")
    assert open_image(tmp_path / "a.png").size == (40, 30)
    with pytest.raises(ValueError, match=r"a.png is 40x30 = 0.0012 MP, over the limit of 0.001 MP"):
        open_image(tmp_path / "a.png", max_pixels=1000)
    (tmp_path / "t.png").write_text("text, not an image")
    with pytest.raises(ValueError, match="cannot read image .*t.png"):
        open_image(tmp_path / "t.png")
    with pytest.raises(FileNotFoundError, match="no.png"):
        open_image(tmp_path / "no.png")
    with pytest.raises(ValueError, match="is a folder"):
        open_image(tmp_path)
    # Pillow's own guard (an error at twice its limit, a warning above it) gives way to ours, and stays in place.
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="over the limit"):
        open_image(tmp_path / "a.png", max_pixels=10)
    assert limit == Image.MAX_IMAGE_PIXELS


def test_read_image_reduced_is_exact_for_small_images_and_keeps_the_full_size(tmp_path):
    from seggpt.io import read_image_reduced

    a = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(a).save(tmp_path / "a.jpg")
    for src in (tmp_path / "a.png", tmp_path / "a.jpg", a):
        img, size = read_image_reduced(src, 96)  # 200 < 4 x 96: read whole, as read_image reads it
        np.testing.assert_array_equal(img, read_image(src))
        assert size == (300, 200)
    big = np.kron(a, np.ones((8, 8, 1), np.uint8))  # 2400 x 1600, each pixel an 8 x 8 block
    Image.fromarray(big).save(tmp_path / "big.png")
    img, size = read_image_reduced(tmp_path / "big.png", 96)
    assert size == (2400, 1600) and img.shape == (600, 400, 3)  # box-reduced by 4: the blocks' values
    np.testing.assert_array_equal(img, np.kron(a, np.ones((2, 2, 1), np.uint8)))


def test_read_image_reduced_turns_by_exif(tmp_path):
    from seggpt.io import open_image_resized, read_image_reduced

    a = np.zeros((1000, 2000, 3), np.uint8)
    a[:, :1000] = 255  # left half white
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: 1000 wide, 2000 high, white on top
    img.save(tmp_path / "rot.jpg", exif=exif)
    small, size = read_image_reduced(tmp_path / "rot.jpg", 64)
    assert size == (2000, 1000) and small.shape[0] == 2 * small.shape[1] < 2000
    assert small[: small.shape[0] // 2 - 8].mean() > 240 and small[small.shape[0] // 2 + 8 :].mean() < 15
    preview = np.asarray(open_image_resized(tmp_path / "rot.jpg", (500, 250)))
    assert preview.shape == (500, 250, 3) and preview[:240].mean() > 240 and preview[260:].mean() < 15


def test_list_images_recursive(tmp_path):
    for name in ("b.jpg", "s/a.png", "s/t/c.png", ".h/x.png", "s/.y.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)] == [
        "b.jpg",
        "s/a.png",
        "s/t/c.png",
    ]
    assert [p.name for p in list_images(tmp_path)] == ["b.jpg"]
