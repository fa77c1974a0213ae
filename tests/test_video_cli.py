"""``seggpt video`` end to end on a tiny random model saved in the native format."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seggpt import SegGPT, save_native, vit_tiny
from seggpt.cli import main
from seggpt.video_io import open_frames, read_davis_png, write_davis_png, write_video

H, W, T = 40, 48, 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_cli")
    weights = root / "tiny.safetensors"
    save_native(SegGPT(vit_tiny()), weights)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    folder = root / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.jpg")
    write_video(root / "clip.mp4", list(frames), fps=10)
    mask = np.zeros((H, W), np.int64)
    mask[4:14, 4:20] = 1
    mask[20:36, 24:44] = 2
    write_davis_png(root / "first.png", mask)
    return root, weights, mask


def test_folder_to_davis_annotations_and_overlay_video(setup, tmp_path, capsys):
    root, weights, mask = setup
    out = tmp_path / "out"
    args = ["video", "--frames", str(root / "frames"), "--first-mask", str(root / "first.png")]
    args += ["--weights", str(weights), "--out", str(out), "--context", "2", "--no-progress"]
    args += ["--overlay-video", str(tmp_path / "overlay.mp4")]
    assert main(args) == 0
    assert "frames/s" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(T)]
    for i in range(T):
        with Image.open(out / f"{i:05d}.png") as img:
            assert img.mode == "P" and img.size == (W, H)
        assert set(np.unique(read_davis_png(out / f"{i:05d}.png"))) <= {0, 1, 2}
    np.testing.assert_array_equal(read_davis_png(out / "00000.png"), mask)
    assert len(list(open_frames(tmp_path / "overlay.mp4"))) == T
    # A second run must not overwrite silently.
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    # Re-prompt after the run: annotate frame 3 and redo frames 3.. only.
    before = {i: (out / f"{i:05d}.png").read_bytes() for i in range(T)}
    new = np.zeros((H, W), np.int64)
    new[0:6, 40:48] = 4
    write_davis_png(tmp_path / "new.png", new)
    assert main(args + ["--overwrite", "--start", "3", "--annotation", f"3:{tmp_path / 'new.png'}"]) == 0
    assert all((out / f"{i:05d}.png").read_bytes() == before[i] for i in range(3))
    assert (read_davis_png(out / "00003.png")[0:6, 40:48] == 4).all()


def test_video_file_with_later_annotation(setup, tmp_path):
    root, weights, mask = setup
    new = np.zeros((H, W), np.int64)
    new[0:6, 40:48] = 4
    write_davis_png(tmp_path / "new.png", new)
    out = tmp_path / "out"
    args = ["video", "--frames", str(root / "clip.mp4"), "--first-mask", str(root / "first.png")]
    args += ["--weights", str(weights), "--out", str(out), "--annotation", f"3:{tmp_path / 'new.png'}"]
    assert main(args + ["--no-progress", "--dtype", "bf16"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(T)]
    third = read_davis_png(out / "00003.png")
    np.testing.assert_array_equal(third[0:6, 40:48], 4)  # the annotation's object is exactly where drawn
    assert (third == 4).sum() == 48


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("size", "a mask must have its frame's size"),
        ("empty", "no object"),
        ("broken", "cannot read"),
        ("missing", "no such folder"),
    ],
)
def test_clear_errors(setup, tmp_path, capsys, case, message):
    root, weights, mask = setup
    frames, first = root / "frames", root / "first.png"
    if case == "size":
        write_davis_png(tmp_path / "small.png", mask[:30])
        first = tmp_path / "small.png"
    elif case == "empty":
        write_davis_png(tmp_path / "empty.png", mask * 0)
        first = tmp_path / "empty.png"
    elif case == "broken":
        frames = tmp_path / "broken.mp4"
        frames.write_bytes(b"\x00\x01 not a video")
    else:
        frames = tmp_path / "missing.mp4"
    args = ["video", "--frames", str(frames), "--first-mask", str(first), "--weights", str(weights)]
    assert main(args + ["--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list((tmp_path / "out").glob("*.png"))  # nothing half-written


def test_learned_prompt_file_segments_every_frame(setup, tmp_path, capsys):
    import torch

    from seggpt.predictor import SegGPTPredictor
    from seggpt.tuning import LearnedPrompt, LearnedPromptVideo, model_fingerprint

    root, weights, _ = setup
    model = SegGPTPredictor(weights).model
    h, w = model.config.image_size
    g = torch.Generator().manual_seed(0)
    prompt = LearnedPrompt(
        images=torch.randn(1, 3, h, w, generator=g),
        masks=torch.randn(1, 3, h, w, generator=g),
        task="instance",
        classes=(7,),
        fingerprint=model_fingerprint(model),
    )
    path = prompt.save(tmp_path / "prompt.safetensors")
    out = tmp_path / "out"
    args = ["video", "--frames", str(root / "frames"), "--prompt-file", str(path), "--weights", str(weights)]
    assert main(args + ["--out", str(out), "--no-progress"]) == 0
    expected = list(LearnedPromptVideo(SegGPTPredictor(weights), path).propagate(root / "frames"))
    for t, labels in expected:
        np.testing.assert_array_equal(read_davis_png(out / f"{t:05d}.png"), labels)
    # One source of objects at a time, and no propagation options with a learned prompt.
    both = args + ["--first-mask", str(root / "first.png"), "--out", str(tmp_path / "o2")]
    assert main(both) == 2
    assert main(args + ["--start", "2", "--out", str(tmp_path / "o3")]) == 2
    assert "--prompt-file" in capsys.readouterr().err


@pytest.mark.parametrize("size, squeezed", [(None, False), ("32x64", True)])
def test_portrait_video_gets_the_embedded_models_video_size_turned(
    setup, tmp_path, monkeypatch, caplog, size, squeezed
):
    """Without --image-size the embedded model's landscape video size is turned to portrait for portrait frames,
    so they are not squeezed; an explicit landscape size is kept, and warned about."""
    import seggpt.checkpoint as ck

    _, weights, _ = setup
    monkeypatch.setattr(ck, "EMBEDDED_WEIGHTS", weights)
    monkeypatch.setattr(ck, "EMBEDDED_VIDEO_IMAGE_SIZE", (32, 64))
    folder = tmp_path / "portrait"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (W, H, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    first = np.zeros((W, H), np.int64)  # 40 wide, 48 high
    first[4:20, 4:14] = 1
    write_davis_png(tmp_path / "first.png", first)
    args = ["video", "--frames", str(folder), "--first-mask", str(tmp_path / "first.png"), "--out", str(tmp_path / "o")]
    args += ["--no-progress"] + (["--image-size", size] if size else [])
    with caplog.at_level("WARNING", logger="seggpt.video"):
        assert main(args) == 0
    warned = [r.getMessage() for r in caplog.records if "squeezed" in r.getMessage()]
    assert len(warned) == squeezed
    assert all("--image-size 64x32" in m for m in warned)
    assert read_davis_png(tmp_path / "o" / "00002.png").shape == (W, H)
