"""Test-time views (SegGPTPredictor(scales=, flip=), --scales / --flip): each view against a model loaded at its
size on its own, the mean against the views computed here, flip symmetry, and every refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import randomize_
from seggpt.checkpoint import set_image_size
from seggpt.cli import main
from seggpt.config import vit_tiny
from seggpt.modeling import SegGPT
from seggpt.predictor import SegGPTPredictor, check_scales, scaled_size


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_(SegGPT(vit_tiny()), std=0.1).eval()


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (44, 60, 3), dtype=np.uint8)
    mask = np.zeros(image.shape[:2], np.int64)
    mask[8:30, 10:40] = 1
    target = rng.integers(0, 256, (50, 38, 3), dtype=np.uint8)
    return image, mask, target


def at_size(model: SegGPT, side: int) -> SegGPT:
    """The model loaded again at another size through the checkpoint path (tables resized in the state dict)."""
    sd, cfg = set_image_size(model.state_dict(), model.config, side)
    out = SegGPT(cfg)
    out.load_state_dict(sd)
    return out.eval()


def test_check_scales():
    assert check_scales(None) == (1.0,)
    assert check_scales([1, 1.5]) == (1.0, 1.5)
    for bad, says in [((1.5,), "must hold 1"), ((), "positive"), ((1, 1), "repeat"), ((1, 0), "positive")]:
        with pytest.raises(ValueError, match=says):
            check_scales(bad)
    assert scaled_size((256, 256), 1.5, 16) == (384, 384)
    assert scaled_size((288, 512), 1.25, 16) == (352, 640)
    assert scaled_size((32, 32), 0.1, 16) == (16, 16)


def test_one_scale_without_flip_is_the_plain_predictor(model, data):
    image, mask, target = data
    plain, same = SegGPTPredictor(model), SegGPTPredictor(model, scales=(1,))
    for p in (plain, same):
        p.set_prompts(image, mask)
    assert np.array_equal(plain.predict(target).raw, same.predict(target).raw)


@pytest.mark.parametrize("flip", [False, True])
def test_views_average_to_the_models_at_each_size(model, data, flip):
    image, mask, target = data
    tta = SegGPTPredictor(model, scales=(1, 1.5), flip=flip)
    tta.set_prompts(image, mask)
    assert tta.answer_size == (48, 48)
    q, size = tta.prepare_target(target)
    assert tuple(q.shape) == (3, 48, 48) and size == target.shape[:2]
    got = tta.paint(q[None])[0]

    small, large = SegGPTPredictor(model), SegGPTPredictor(at_size(model, 48))
    for p in (small, large):
        p.set_prompts(image, mask)
    answers = []
    # The smaller view's query: the larger one resized as an image, in [0, 255] (ImageNet statistics written out).
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    pixels = (q * std + mean).clamp(0, 1) * 255
    shrunk = F.interpolate(pixels[None], size=(32, 32), mode="bicubic", align_corners=False, antialias=True)
    shrunk = shrunk[0].clamp(0, 255)
    for p, query in ((small, (shrunk / 255 - mean) / std), (large, q)):
        views = [p.paint(query[None])[0]]
        if flip:
            views.append(p.paint(query.flip(-1)[None])[0].flip(-1))
        answers += [F.interpolate(a[None], size=(48, 48), mode="bilinear", align_corners=False)[0] for a in views]
    want = torch.stack(answers).mean(0)
    assert torch.allclose(got, want, atol=1e-3), (got - want).abs().max()
    # and it is not simply one of the views
    assert (got - answers[0]).abs().max() > 1e-2


def test_flip_makes_the_answer_mirror_symmetric(model, data):
    image, mask, target = data
    p = SegGPTPredictor(model, flip=True)
    p.set_prompts(image, mask)
    a = p.predict(target).raw
    b = p.predict(np.ascontiguousarray(target[:, ::-1])).raw
    assert np.allclose(a[:, ::-1], b, atol=1e-3)
    plain = SegGPTPredictor(model)
    plain.set_prompts(image, mask)
    assert not np.allclose(plain.predict(target).raw[:, ::-1], plain.predict(target[:, ::-1].copy()).raw, atol=1e-3)


def test_embedded_model_views_equal_loading_it_at_that_size(data):
    image, mask, target = data
    tta = SegGPTPredictor(scales=(1, 1.25))
    tta.set_prompts(image, mask)
    q, _ = tta.prepare_target(target)
    view = tta._views[0]
    ref = SegGPTPredictor(image_size=320)
    ref.set_prompts(image, mask)
    assert torch.equal(view.paint(q[None]), ref.paint(q[None]))


def test_a_given_models_view_shares_its_weights(model):
    view = SegGPTPredictor(model, scales=(1, 2))._views[0]
    assert view.config.image_size == (64, 64) and model.config.image_size == (32, 32)
    assert view.model is not model and view.model.blocks is model.blocks


def test_refusals(model, data):
    image, mask, _ = data
    with pytest.raises(ValueError, match="spatial"):
        SegGPTPredictor(model, flip=True).set_prompts([image, image], [mask, mask], ensemble="spatial")
    p = SegGPTPredictor(model, scales=(1, 2))
    with pytest.raises(ValueError, match="set_prompts"):
        p.set_prompt_tensors(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="rounds to the model's own size"):
        SegGPTPredictor(model, scales=(1, 1.1))


def test_cli_rejects_bad_scales_in_one_line(capsys):
    for bad in ("2", "1,x", "1,1"):
        with pytest.raises(SystemExit) as e:
            main(["segment", "--scales", bad, "--prompt", "a.png", "a_mask.png", "--out", "o", "b.png"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "--scales" in err and "Traceback" not in err
    assert main(["eval", "davis2017", "--data", "nowhere", "--scales", "1,1.5", "--json", "x.json"]) == 2
    assert "--scales is for still images" in capsys.readouterr().err


def test_segment_and_eval_with_views(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    mask = np.zeros((40, 52), np.uint8)
    mask[10:30, 12:40] = 255
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    Image.fromarray(img[:, ::-1].copy()).save(tmp_path / "b.png")
    code = main(["segment", "--prompt", str(tmp_path / "a.png"), str(tmp_path / "a_mask.png"), str(tmp_path / "b.png"),
                 "--out", str(tmp_path / "out"), "--scales", "1,1.5", "--flip", "--no-progress"])  # fmt: skip
    assert code == 0 and Image.open(tmp_path / "out" / "b.png").size == (52, 40), capsys.readouterr()
    code = main(["eval", "synthcontext", "--episodes", "2", "--scales", "1,1.25", "--flip", "--json",
                 str(tmp_path / "s.json"), "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr()
    run = json.loads((tmp_path / "s.json").read_text())["run"]
    assert run["scales"] == [1.0, 1.25] and run["flip"] is True
