"""Images read at their own shape (SegGPTPredictor(keep_aspect=True), --keep-aspect): the shape chosen, the answer
against a predictor on a model built at that shape on its own, targets of several shapes in one batch, new examples,
square by default, the command line and the reduced reading of large files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import randomize_
from seggpt.checkpoint import set_image_size
from seggpt.cli import main
from seggpt.config import vit_tiny
from seggpt.io import read_image, read_image_reduced
from seggpt.modeling import SegGPT
from seggpt.predictor import SegGPTPredictor, aspect_size


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_(SegGPT(vit_tiny()), std=0.1).eval()  # 32 x 32 images, 8-pixel patches: 16 patches


def at_shape(model: SegGPT, hw: tuple[int, int]) -> SegGPT:
    """The model built again at another image size through the checkpoint path (tables resized in the state dict)."""
    sd, cfg = set_image_size(model.state_dict(), model.config, hw)
    out = SegGPT(cfg)
    out.load_state_dict(sd)
    return out.eval()


def examples(n: int = 1):
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (44, 60, 3), dtype=np.uint8) for _ in range(n)]
    masks = []
    for i in range(n):
        m = np.zeros((44, 60), np.int64)
        m[6 + i : 30, 10 : 40 - i] = 1
        m[34:, 45:] = 2
        masks.append(m)
    return images, masks


def target(h: int, w: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_aspect_size_on_the_patches_of_the_size():
    # Worked by hand on 256 x 256's 16 x 16 patches of 16 px: for each number of rows, the widest row that fits;
    # of those, the ratio nearest the image's.
    assert aspect_size(360, 480, (256, 256), 16) == (224, 288)  # 14 x 18 = 252 patches, 1.29 for 4:3
    assert aspect_size(480, 360, (256, 256), 16) == (288, 224)
    assert aspect_size(100, 100, (256, 256), 16) == (256, 256)
    assert aspect_size(1080, 1920, (256, 256), 16) == (192, 336)  # 12 x 21 = 252, 1.75 for 16:9
    assert aspect_size(100, 1000, (256, 256), 16) == (128, 512)  # held at 4:1
    assert aspect_size(1000, 100, (256, 256), 16) == (512, 128)
    assert aspect_size(30, 40, (32, 32), 8) == (24, 40)  # 3 x 5 = 15 of 16 patches: 1.67 against 1.0 for 1.33
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(20, 4000, 2))
        sh, sw = aspect_size(h, w, (240, 320), 16)
        assert sh % 16 == 0 and sw % 16 == 0
        assert 300 - 36 < (sh // 16) * (sw // 16) <= 300  # 15 x 20 patches, less at most one row's worth
        if 0.25 <= w / h <= 4:
            assert abs(np.log(sw / sh) - np.log(w / h)) < 0.2


@pytest.mark.parametrize("ensemble", ["none", "feature", "spatial"])
def test_a_target_is_read_at_its_shape(model, ensemble):
    n = 1 if ensemble == "none" else 2
    images, masks = examples(n)
    t = target(30, 40)  # 4:3 -> 24 x 40 on the model's 16 patches
    kept = SegGPTPredictor(model, keep_aspect=True)
    ref = SegGPTPredictor(at_shape(model, (24, 40)))
    square = SegGPTPredictor(model)
    for p in (kept, ref, square):
        p.set_prompts(images, masks, ensemble=ensemble)
    a, b, c = kept.predict(t), ref.predict(t), square.predict(t)
    assert a.raw.shape == (24, 40, 3)
    torch.testing.assert_close(torch.from_numpy(a.raw), torch.from_numpy(b.raw), atol=1e-3, rtol=0)
    assert np.array_equal(a.labels, b.labels)
    assert c.raw.shape == (32, 32, 3)  # read square without keep_aspect


def test_views_are_taken_at_the_targets_shape(model):
    images, masks = examples()
    t = target(40, 30)  # 3:4 -> 40 x 24
    kept = SegGPTPredictor(model, keep_aspect=True, scales=(1, 2))
    ref = SegGPTPredictor(at_shape(model, (40, 24)), scales=(1, 2))
    for p in (kept, ref):
        p.set_prompts(images, masks)
    a, b = kept.predict(t), ref.predict(t)
    assert a.raw.shape == (80, 48, 3)
    torch.testing.assert_close(torch.from_numpy(a.raw), torch.from_numpy(b.raw), atol=1e-3, rtol=0)


def test_targets_of_several_shapes_in_one_batch(model):
    images, masks = examples()
    targets = [target(30, 40, 1), target(40, 30, 2), target(32, 32, 3), target(30, 40, 4), target(15, 60, 5)]
    p = SegGPTPredictor(model, keep_aspect=True)
    p.set_prompts(images, masks)
    together = p.predict_batch(targets, batch_size=5)
    for t, got in zip(targets, together, strict=True):
        alone = p.predict(t)
        assert got.labels.shape == t.shape[:2]
        assert np.array_equal(got.labels, alone.labels) and np.allclose(got.raw, alone.raw, atol=1e-4)
    with pytest.raises(ValueError, match="paint_each"):
        p.prepare_targets(targets[:2])
    queries = [p.prepare_target(t)[0] for t in targets]
    assert [tuple(q.shape[1:]) for q in queries] == [(24, 40), (40, 24), (32, 32), (24, 40), (16, 64)]
    for answer, q in zip(p.paint_each(queries), queries, strict=True):
        assert answer.shape == q.shape


def test_new_examples_reach_every_shape(model):
    (a_img,), (a_mask,) = examples()
    b_img, b_mask = target(50, 50, 9), np.zeros((50, 50), np.int64)
    b_mask[10:40, 5:20] = 1
    t = target(30, 40)
    p = SegGPTPredictor(model, keep_aspect=True)
    p.set_prompts(a_img, a_mask)
    p.predict(t)  # the twin for 24 x 40 is made with the first examples
    p.set_prompts(b_img, b_mask)
    fresh = SegGPTPredictor(model, keep_aspect=True)
    fresh.set_prompts(b_img, b_mask)
    assert np.array_equal(p.predict(t).raw, fresh.predict(t).raw)


def test_prompt_tensors_keep_targets_at_the_models_size(model):
    p = SegGPTPredictor(model, keep_aspect=True)
    p.set_prompt_tensors(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    q, size = p.prepare_target(target(30, 40))
    assert tuple(q.shape) == (3, 32, 32) and size == (30, 40)


def test_square_by_default(model):
    assert SegGPTPredictor(model).keep_aspect is False
    p = SegGPTPredictor()  # the embedded model too
    assert p.keep_aspect is False
    p.set_prompts(*examples())
    assert p.predict(target(360, 480)).raw.shape == (256, 256, 3)


def test_the_embedded_model_reads_a_photograph_at_its_shape():
    images, masks = examples()
    t = target(360, 480)
    kept, at = SegGPTPredictor(keep_aspect=True), SegGPTPredictor(image_size=(224, 288))
    for p in (kept, at):
        p.set_prompts(images, masks)
    a, b = kept.predict(t), at.predict(t)
    assert a.raw.shape == b.raw.shape == (224, 288, 3)
    # The same reading but for the relative position tables: loaded at 224 x 288 they are resized once from the
    # trained ones, and the twin at 224 x 288 resizes the 256 x 256 ones it shares (on these noise images about 1
    # level of 255 apart on average, 99% of the labels the same).
    assert np.abs(a.raw - b.raw).mean() < 2.5
    assert (a.labels == b.labels).mean() > 0.98


def test_segment_cli(weights, tmp_path):
    images, masks = examples()
    Image.fromarray(images[0]).save(tmp_path / "ex.png")
    Image.fromarray(masks[0].astype(np.uint8)).save(tmp_path / "ex_mask.png")
    for name, (h, w) in {"wide": (30, 40), "tall": (40, 30), "flat": (15, 60)}.items():
        Image.fromarray(target(h, w, len(name))).save(tmp_path / f"{name}.png")
    prompt = ["--prompt", str(tmp_path / "ex.png"), str(tmp_path / "ex_mask.png")]
    targets = [str(tmp_path / f"{n}.png") for n in ("wide", "tall", "flat")]
    for flag in ("--keep-aspect", None):
        out = tmp_path / str(flag)
        extra = [flag] if flag else []
        assert main(["segment", "--weights", str(weights), *prompt, *extra, "--out", str(out), *targets]) == 0
        p = SegGPTPredictor(weights, keep_aspect=flag == "--keep-aspect")
        p.set_prompts(tmp_path / "ex.png", tmp_path / "ex_mask.png")
        for t in targets:
            stem = t.rsplit("/", 1)[1][:-4]
            saved = np.array(Image.open(out / f"{stem}.png"))
            assert np.array_equal(saved, p.predict(t).labels)


def test_large_files_are_reduced_for_their_shape(tmp_path):
    # A 1600 x 400 JPEG stored on its side (EXIF orientation 6): upright it is 400 wide and 1600 high.
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(target(400, 1600)).save(path, exif=exif)
    asked = []

    def side(h: int, w: int) -> int:
        asked.append((h, w))
        return 32

    a, size = read_image_reduced(path, side)
    assert size == (1600, 400) and asked and set(asked) == {(1600, 400)}
    assert a.shape[0] > a.shape[1] and min(a.shape[:2]) >= 4 * 32  # REDUCE_MARGIN x the side asked for
    assert min(a.shape[:2]) < 400  # reduced
    full = read_image(path)
    assert full.shape == (1600, 400, 3)


def test_eval_records_the_reading_only_when_asked(model):
    from seggpt.cli.eval import _reading

    # A square reading keeps the state fingerprint of the versions before the option, so their runs resume.
    assert "keep_aspect" not in _reading(SegGPTPredictor(model))
    assert _reading(SegGPTPredictor(model, keep_aspect=True))["keep_aspect"] is True
