"""Checkpoint formats: official .pth, Hugging Face folders, native safetensors; strict loading; conversions."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import seggpt.checkpoint as ck
from conftest import hf_config_for, randomize_
from seggpt.cli import main as cli_main
from seggpt.config import vit_base, vit_large, vit_tiny
from seggpt.modeling import SegGPT


def _model(**overrides) -> SegGPT:
    return randomize_(SegGPT(vit_tiny(**overrides))).eval()


def _forward(model: SegGPT) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    h, w = model.config.img_size
    images, masks = torch.randn(2, 3, h, w, generator=g), torch.randn(2, 3, h, w, generator=g)
    with torch.no_grad():
        return model(images, masks, model.query_mask(), torch.tensor([0, 1]))


def _hf_forward(hf, model_cfg) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    h, w = model_cfg.img_size
    images, masks = torch.randn(2, 3, h, w, generator=g), torch.randn(2, 3, h, w, generator=g)
    half = h // 2
    outs = []
    with torch.no_grad():
        for i, task in enumerate(("semantic", "instance")):
            outs.append(
                hf(
                    pixel_values=images[i : i + 1, :, half:],
                    prompt_pixel_values=images[i : i + 1, :, :half],
                    prompt_masks=masks[i : i + 1, :, :half],
                    embedding_type=task,
                ).pred_masks
            )
    return torch.cat(outs)


def _same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_key_maps_are_inverse_and_cover_every_key():
    sd = SegGPT(vit_tiny()).state_dict()
    hf_sd = ck.official_to_hf(sd)
    assert len(hf_sd) == len(sd)
    _same_tensors(ck.hf_to_official(hf_sd), sd)


def test_official_names_match_transformers_names():
    from transformers import SegGptForImageSegmentation

    cfg = vit_tiny()
    hf_keys = set(SegGptForImageSegmentation(hf_config_for(cfg)).state_dict())
    assert set(ck.official_to_hf(SegGPT(cfg).state_dict())) == hf_keys


def test_released_key_count_and_inferred_architecture():
    with torch.device("meta"):
        sd = SegGPT(vit_large()).state_dict()
    assert len(sd) == 354  # SEGGPT.md section 3
    assert ck.infer_config(sd) == vit_large()
    with torch.device("meta"):
        sd_b = SegGPT(vit_base()).state_dict()
    assert ck.infer_config(sd_b) == vit_base()


def test_infers_heads_canvas_and_windows_from_shapes():
    cfg = vit_tiny(num_heads=4, img_size=(128, 64), window_size=4, global_attn_indexes=(1, 3))
    sd = SegGPT(cfg).state_dict()
    got = ck.infer_config(sd, merge_index=cfg.merge_index, out_indices=cfg.out_indices)
    assert got.num_heads == 4  # width 32 / head dim 8
    assert got.img_size == (128, 64)
    assert got.window_size == 4 and got.global_attn_indexes == (1, 3)
    assert got == cfg.replace(drop_path_rate=got.drop_path_rate)


def test_infers_a_convolutional_stem_from_shapes():
    cfg = vit_tiny(stem_channels=(8, 16))
    got = ck.infer_config(SegGPT(cfg).state_dict(), merge_index=cfg.merge_index, out_indices=cfg.out_indices)
    assert got.stem_channels == (8, 16) and got.patch_size == 8 and got.in_chans == 3
    assert got == cfg.replace(drop_path_rate=got.drop_path_rate)


def test_infers_a_conv_branch_from_shapes():
    cfg = vit_tiny(branch_channels=(4, 8, 16), branch_depth=3)
    got = ck.infer_config(SegGPT(cfg).state_dict(), merge_index=cfg.merge_index, out_indices=cfg.out_indices)
    assert got.branch_channels == (4, 8, 16) and got.branch_depth == 3
    assert got == cfg.replace(drop_path_rate=got.drop_path_rate)


def test_official_pth_loads_exactly(tmp_path):
    model = _model()
    path = tmp_path / "seggpt_official.pth"
    torch.save({"model": model.state_dict()}, path)
    loaded = ck.load_model(path, merge_index=1, out_indices=(1, 2, 3))
    torch.testing.assert_close(_forward(loaded), _forward(model), atol=0, rtol=0)
    torch.save(model.state_dict(), tmp_path / "bare.pth")  # a bare state dict works too
    _same_tensors(ck.read_checkpoint(tmp_path / "bare.pth")[0], model.state_dict())


@pytest.mark.parametrize("safe", [True, False])
def test_loads_a_save_pretrained_folder(tmp_path, safe):
    from transformers import SegGptForImageSegmentation

    cfg = vit_tiny()
    hf = randomize_(SegGptForImageSegmentation(hf_config_for(cfg))).eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=safe)
    ours = ck.load_model(tmp_path / "hf")
    assert ours.config.replace(drop_path_rate=0.0) == cfg
    torch.testing.assert_close(_forward(ours), _hf_forward(hf, cfg), atol=1e-4, rtol=0)


def test_converted_hf_folder_loads_in_transformers(tmp_path):
    from transformers import SegGptForImageSegmentation

    model = _model()
    ck.save_native(model, tmp_path / "m.safetensors")
    ck.convert(tmp_path / "m.safetensors", tmp_path / "hf", to="hf")
    hf = SegGptForImageSegmentation.from_pretrained(tmp_path / "hf").eval()
    torch.testing.assert_close(_hf_forward(hf, model.config), _forward(model), atol=1e-4, rtol=0)


def test_round_trips_are_bit_exact(tmp_path):
    model = _model()
    native = ck.save_native(model, tmp_path / "a.safetensors")
    ck.convert(native, tmp_path / "b_hf", to="hf")
    ck.convert(tmp_path / "b_hf", tmp_path / "c.pth", to="official")
    ck.convert(tmp_path / "c.pth", tmp_path / "d.safetensors", to="native")
    for p in ("b_hf", "c.pth", "d.safetensors"):
        sd, _ = ck.read_checkpoint(tmp_path / p)
        _same_tensors(sd, model.state_dict())
    # The native format keeps what shapes cannot tell (merge_index, decoder taps).
    assert ck.read_checkpoint(native)[1] == model.config


def test_native_keeps_fp16_and_loads_in_any_dtype(tmp_path):
    model = _model()
    ck.save_native(model, tmp_path / "h.safetensors", dtype=torch.float16)
    sd, _ = ck.read_checkpoint(tmp_path / "h.safetensors")
    assert all(v.dtype == torch.float16 for v in sd.values())
    bf = ck.load_model(tmp_path / "h.safetensors", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf.parameters())
    assert not bf.training


def test_wrong_shapes_missing_and_unexpected_keys_are_named(tmp_path):
    sd = _model().state_dict()
    sd["blocks.0.mlp.fc1.weight"] = torch.zeros(7, 32)
    del sd["blocks.1.norm2.bias"]
    sd["blocks.0.attn.extra"] = torch.zeros(1)
    ck.save_native(sd, tmp_path / "bad.safetensors", config=vit_tiny())
    with pytest.raises(ck.CheckpointError) as e:
        ck.load_model(tmp_path / "bad.safetensors")
    msg = str(e.value)
    assert "blocks.1.norm2.bias" in msg and "missing" in msg
    assert "blocks.0.attn.extra" in msg and "unexpected" in msg
    assert "blocks.0.mlp.fc1.weight (7, 32) (model wants (128, 32))" in msg


class Payload:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        # Protocol 2, as torch.save writes: a newer one only adds torch's warning about the protocol.
        pickle.dump({"model": Payload()}, f, protocol=2)
    with pytest.raises(ck.CheckpointError, match="not a plain tensor checkpoint"):
        ck.load_model(path)


def test_other_bad_sources(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="not found"):
        ck.load_model(tmp_path / "nope.pth")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ck.CheckpointError, match="config.json"):
        ck.load_model(tmp_path / "folder")
    (tmp_path / "folder" / "config.json").write_text('{"model_type": "vit"}')
    with pytest.raises(ck.CheckpointError, match="not 'seggpt'"):
        ck.load_model(tmp_path / "folder")
    torch.save({"model": {"foo": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ck.CheckpointError, match="not a SegGPT state dict"):
        ck.load_model(tmp_path / "other.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ck.CheckpointError, match="cannot read"):
        ck.load_model(tmp_path / "junk.safetensors")
    monkeypatch.setattr(ck, "EMBEDDED_WEIGHTS", tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="no embedded model"):
        ck.load_model()


def test_windowed_model_cannot_go_to_hf(tmp_path):
    model = _model(img_size=(64, 64), window_size=4)
    ck.save_native(model, tmp_path / "w.safetensors")
    with pytest.raises(ck.CheckpointError, match="windowed"):
        ck.convert(tmp_path / "w.safetensors", tmp_path / "w_hf", to="hf")
    assert not (tmp_path / "w_hf").exists()


def test_cli_convert(tmp_path, capsys):
    model = _model()
    src = ck.save_native(model, tmp_path / "m.safetensors")
    assert cli_main(["convert", str(src), str(tmp_path / "m.pth"), "--to", "official"]) == 0
    assert "wrote" in capsys.readouterr().out
    before = Path(tmp_path / "m.pth").read_bytes()
    # An existing output is not overwritten without --overwrite.
    assert cli_main(["convert", str(src), str(tmp_path / "m.pth"), "--to", "official"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert Path(tmp_path / "m.pth").read_bytes() == before
    assert cli_main(["convert", str(src), str(tmp_path / "m.pth"), "--to", "official", "--overwrite"]) == 0
    _same_tensors(ck.read_checkpoint(tmp_path / "m.pth")[0], model.state_dict())


def _encode(model: SegGPT, images: torch.Tensor, masks: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The encoder's taps and the decoder's full-resolution input (before its 3x3 conv), in float64."""
    with torch.no_grad():
        tokens = model.embed(model.patch_embed(images), model.patch_embed(masks), model.query_mask(), torch.tensor([0]))
        taps = model.forward_encoder(tokens)
        p, d = model.config.patch_size, model.config.decoder_embed_dim
        h = model.decoder_embed(torch.cat(taps, dim=-1))
        b, hp, wp, _ = h.shape
        h = h.reshape(b, hp, wp, p, p, d).permute(0, 1, 3, 2, 4, 5).reshape(b, hp * p, wp * p, d)
    return taps, h


def test_scale_resolution_computes_the_same_on_an_upsampled_image():
    model = _model().double()
    sd, cfg = ck.scale_resolution(model.state_dict(), model.config, 2)
    assert cfg.img_size == tuple(2 * s for s in model.config.img_size)
    assert cfg.patch_size == 2 * model.config.patch_size and cfg.grid_size == model.config.grid_size
    big = SegGPT(cfg).double().eval()
    ck.load_state_dict_strict(big, sd)
    g = torch.Generator().manual_seed(0)
    h, w = model.config.img_size
    images, masks = torch.randn(1, 3, h, w, generator=g).double(), torch.randn(1, 3, h, w, generator=g).double()

    def up(t: torch.Tensor) -> torch.Tensor:  # nearest neighbour, written independently of the code under test
        return torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest")

    taps, dec_in = _encode(model, images, masks)
    big_taps, big_dec_in = _encode(big, up(images), up(masks))
    for a, b in zip(taps, big_taps, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    torch.testing.assert_close(up(dec_in.permute(0, 3, 1, 2)), big_dec_in.permute(0, 3, 1, 2), rtol=0, atol=1e-9)
    # Only the decoder's 3x3 conv sees another neighbourhood; the whole model runs at the new size.
    with torch.no_grad():
        out = model(images, masks, model.query_mask(), torch.tensor([0]))
        big_out = big(up(images), up(masks), big.query_mask(), torch.tensor([0]))
    assert big_out.shape[-2:] == up(out).shape[-2:]


@pytest.mark.parametrize(
    "extra,word",
    [({"stem_channels": (8, 16)}, "stem"), ({"branch_channels": (4, 8, 8)}, "branch")],
    ids=["stem", "branch"],
)
def test_conv_model_round_trips_natively_and_official_but_not_to_hf(tmp_path, extra, word):
    model = _model(**extra)
    if model.patch_embed.branch is not None:  # starts at zero: give it a say in the output
        torch.nn.init.normal_(model.patch_embed.branch.out.weight, std=0.1)
    native = ck.save_native(model, tmp_path / "s.safetensors")
    ck.convert(native, tmp_path / "s.pth", to="official")
    for p in (native, tmp_path / "s.pth"):
        loaded = ck.load_model(p)
        assert loaded.config == model.config
        torch.testing.assert_close(_forward(loaded), _forward(model), rtol=0, atol=0)
    with pytest.raises(ck.CheckpointError, match=word):
        ck.convert(native, tmp_path / "s_hf", to="hf")
    assert not (tmp_path / "s_hf").exists()
    with pytest.raises(ck.CheckpointError, match=word):
        ck.scale_resolution(model.state_dict(), model.config, 2)


def test_scale_resolution_refuses_bad_factors_and_keeps_factor_one():
    model = _model()
    sd, cfg = ck.scale_resolution(model.state_dict(), model.config, 1)
    assert cfg == model.config and all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="positive integer"):
            ck.scale_resolution(model.state_dict(), model.config, bad)
    with pytest.raises(ck.CheckpointError, match="lacks"):
        ck.scale_resolution({}, model.config, 2)


def _linear_resize_np(table: np.ndarray, length: int) -> np.ndarray:
    """Linear resampling of rows with half-pixel centres (what F.interpolate(..., align_corners=False) means),
    written with numpy's interp: the independent reference for the resized relative position tables."""
    n = table.shape[0]
    x = np.clip((np.arange(length) + 0.5) * n / length - 0.5, 0, n - 1)
    return np.stack([np.interp(x, np.arange(n), table[:, c]) for c in range(table.shape[1])], 1)


def test_set_image_size_resizes_the_relative_tables_and_runs_on_the_new_grid():
    model = _model().double()  # vit_tiny: 32x32 images, patch 8, 4x4 tokens each
    sd, cfg = ck.set_image_size(model.state_dict(), model.config, 48)
    assert cfg.img_size == (96, 48) and cfg.patch_size == model.config.patch_size and cfg.grid_size == (12, 6)
    for k, v in model.state_dict().items():
        if k.endswith("rel_pos_h") or k.endswith("rel_pos_w"):
            length = 2 * (12 if k.endswith("_h") else 6) - 1
            np.testing.assert_allclose(sd[k].numpy(), _linear_resize_np(v.numpy(), length), rtol=0, atol=1e-12)
        else:
            assert torch.equal(sd[k], v), k  # nothing else changes; the position embedding resizes at run time
    big = SegGPT(cfg).double().eval()
    ck.load_state_dict_strict(big, sd)
    # The original model fed the bigger canvas resizes its tables itself, as attention does: the same answer.
    g = torch.Generator().manual_seed(0)
    images, masks = torch.randn(1, 3, 96, 48, generator=g).double(), torch.randn(1, 3, 96, 48, generator=g).double()
    with torch.no_grad():
        out = big(images, masks, big.query_mask(), torch.tensor([0]))
        ref = model(images, masks, big.query_mask(), torch.tensor([0]))
    assert out.shape[-2:] == (96, 48)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-9)


def test_set_image_size_keeps_window_tables_and_refuses_bad_sizes():
    model = _model(window_size=2, global_attn_indexes=(1, 3))
    sd, cfg = ck.set_image_size(model.state_dict(), model.config, (48, 64))
    assert cfg.img_size == (96, 64)
    for i in range(model.config.depth):
        same = torch.equal(sd[f"blocks.{i}.attn.rel_pos_h"], model.state_dict()[f"blocks.{i}.attn.rel_pos_h"])
        assert same == model.config.is_windowed(i), i
    SegGPT(cfg).load_state_dict(sd)  # every shape fits
    same_sd, same_cfg = ck.set_image_size(model.state_dict(), model.config, 32)
    assert same_cfg == model.config and all(torch.equal(same_sd[k], v) for k, v in model.state_dict().items())
    for bad in (0, 12, (32, 20)):
        with pytest.raises(ValueError, match="multiple of the patch size 8"):
            ck.set_image_size(model.state_dict(), model.config, bad)


def test_load_model_image_size(tmp_path, monkeypatch):
    model = _model()
    path = ck.save_native(model, tmp_path / "m.safetensors")
    assert ck.load_model(path).config.img_size == model.config.img_size  # a file: the size it was trained at
    assert ck.load_model(path, image_size=48).config.img_size == (96, 48)
    # The embedded model runs at EMBEDDED_IMAGE_SIZE unless told otherwise.
    monkeypatch.setattr(ck, "EMBEDDED_WEIGHTS", path)
    monkeypatch.setattr(ck, "EMBEDDED_IMAGE_SIZE", 40)
    assert ck.load_model().config.img_size == (80, 40)
    assert ck.load_model(image_size=32).config.img_size == (64, 32)
    assert ck.load_model(path).config.img_size == (80, 40)  # the embedded file by its path: the same model
    # Video may be (height, width): the canvas stacks two such images, and the model runs on the wider grid.
    monkeypatch.setattr(ck, "EMBEDDED_VIDEO_IMAGE_SIZE", (32, 48))
    video = ck.load_model(video=True)
    assert video.config.img_size == (64, 48) and video.config.image_size == (32, 48)
    assert _forward(video).shape[-2:] == (64, 48)


def test_image_size_help_names_the_embedded_sizes():
    # The CLI's help cannot import the constants (it stays torch-free until an option is read): it must keep up.
    import argparse

    from seggpt.cli.options import add_image_size

    p = argparse.ArgumentParser()
    add_image_size(p)
    text = p.format_help().replace("\n", " ")
    text = " ".join(text.split())
    h, w = ck.EMBEDDED_VIDEO_IMAGE_SIZE
    assert f"{ck.EMBEDDED_IMAGE_SIZE} for images" in text
    assert f"{h}x{w} for video" in text


@pytest.mark.parametrize("text, size", [("256", 256), ("288x512", (288, 512)), ("64X32", (64, 32))])
def test_image_size_option_reads_a_side_or_height_by_width(text, size):
    import argparse

    from seggpt.cli.options import add_image_size

    p = argparse.ArgumentParser()
    add_image_size(p)
    assert p.parse_args(["--image-size", text]).image_size == size


@pytest.mark.parametrize("text", ["big", "0", "288x", "1x2x3", "-16"])
def test_image_size_option_refuses_what_is_not_a_size(text, capsys):
    import argparse

    from seggpt.cli.options import add_image_size

    p = argparse.ArgumentParser()
    add_image_size(p)
    with pytest.raises(SystemExit):
        p.parse_args(["--image-size", text])
    assert "is not a size: give a side in pixels (256) or HxW (288x512)" in capsys.readouterr().err


def test_the_embedded_video_size_turns_to_the_frames_orientation(tmp_path):
    from seggpt.checkpoint import default_image_size

    assert default_image_size(None, video=True) == (288, 512)
    assert default_image_size(None, video=True, frame_size=(480, 854)) == (288, 512)
    assert default_image_size(None, video=True, frame_size=(1920, 1080)) == (512, 288)  # a phone held upright
    assert default_image_size(None, video=True, frame_size=(500, 500)) == (288, 512)
    assert default_image_size(None, frame_size=(1920, 1080)) == 256  # still images stay square
    other = tmp_path / "other.safetensors"
    assert default_image_size(other, video=True, frame_size=(1920, 1080)) is None
