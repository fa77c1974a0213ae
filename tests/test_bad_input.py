"""Bad input from a new user (issue #27): one clear line on stderr, no traceback, a non-zero exit, the good work
written and kept, nothing existing overwritten. First the issue's cases one by one, then a sweep of every bad input
class over every command."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seggpt.cli import main

SENTINEL = b"an earlier result that must survive"


# Bad files --------------------------------------------------------------------------------------------------
def huge_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A valid 1-bit PNG of width x height (all black): 50 KB on disk, 400 MP once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    z = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def write_bad(kind: str, path: Path, like: Path | None = None) -> Path:
    """A bad file of a kind at ``path``: "missing" (nothing), "corrupt" (a truncated copy of ``like``), "text" (a
    text file named like an image), "huge" (20000 x 20000)."""
    if kind == "corrupt":
        data = like.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "huge":
        huge_png(path)
    return path


def one_clear_line(err: str, *names: str) -> str:
    """The stderr of a failed command: exactly one line, no traceback, naming ``names``."""
    lines = [x for x in err.splitlines() if x.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def files(tmp_path):
    """Example, mask and two good targets for segment; a folder of images/ + masks/ for tune and eval."""
    Image.fromarray(rgb(40, 48)).save(tmp_path / "ex.jpg")
    mask = np.zeros((40, 48), np.uint8)
    mask[5:25, 8:30] = 1
    Image.fromarray(mask).save(tmp_path / "ex_mask.png")
    Image.fromarray(rgb(30, 50, 1)).save(tmp_path / "a.jpg")
    Image.fromarray(rgb(44, 36, 2)).save(tmp_path / "b.jpg")
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in range(4):
        Image.fromarray(rgb(32, 32, 10 + i)).save(data / "images" / f"im{i}.png")
        m = np.zeros((32, 32), np.uint8)
        m[4 + i : 20, 6:26] = 1
        Image.fromarray(m).save(data / "masks" / f"im{i}.png")
    return tmp_path


def segment_argv(root: Path, weights: Path, *targets, prompt=("ex.jpg", "ex_mask.png")) -> list[str]:
    return ["segment", "--prompt", str(root / prompt[0]), str(root / prompt[1]), "--weights", str(weights),
            "--out", str(root / "out"), "--no-progress", *map(str, targets)]  # fmt: skip


# Issue #27, case by case -----------------------------------------------------------------------------------
def test_1_a_huge_target_is_skipped_and_listed_and_the_others_written(files, weights, capsys):
    """Was: PIL.DecompressionBombError out of the batch, nothing written."""
    huge = huge_png(files / "huge.png")
    code = main(segment_argv(files, weights, files / "a.jpg", huge, files / "b.jpg"))
    out, err = capsys.readouterr()
    assert code == 1
    line = one_clear_line(err, "huge.png", "20000x20000", "--max-megapixels")
    assert "400 MP" in line and "200 MP" in line
    assert "segmented 2 of 3" in out and "1 could not be read" in out
    for stem, (h, w) in (("a", (30, 50)), ("b", (44, 36))):
        assert Image.open(files / "out" / f"{stem}.png").size == (w, h)
    assert not list((files / "out").glob("huge*"))
    # The limit is the user's to move: under 400 MP the same file is refused, at 401 it is read (header only here).
    from seggpt.io import open_image

    assert open_image(huge, max_pixels=401_000_000).size == (20000, 20000)


def test_1_the_pixel_limit_is_an_option(files, weights, capsys):
    big = files / "big.jpg"
    Image.fromarray(rgb(300, 400)).save(big)  # 0.12 MP
    assert main([*segment_argv(files, weights, big, files / "a.jpg"), "--max-megapixels", "0.1"]) == 1
    one_clear_line(capsys.readouterr().err, "big.jpg", "400x300", "0.1 MP")
    assert main([*segment_argv(files, weights, big), "--max-megapixels", "0.2", "--overwrite"]) == 0
    assert Image.open(files / "out" / "big.png").size == (400, 300)
    assert main([*segment_argv(files, weights, big), "--max-megapixels", "0"]) == 2
    one_clear_line(capsys.readouterr().err, "--max-megapixels must be positive")


PEAK_SCRIPT = """
import resource, sys
from seggpt.cli import main
code = main(sys.argv[1:])
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "CODE", code)
"""


def _peak_kb(argv: list[str]) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, *argv], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and "CODE 0" in r.stdout, r.stderr[-2000:]
    return int(r.stdout.split("PEAK_KB")[1].split()[0])


def test_2_memory_is_bounded_by_the_model_input_not_the_target(files, weights, tmp_path):
    """Was: 53 bytes a target pixel (7.6 GB for 12000 x 12000). A 36 MP JPEG target costs the model's input and the
    overlay (at most 40 MP, 4 bytes a pixel), not tens of bytes a pixel; the label map has the full size."""
    n = 6000
    y, x = np.mgrid[0:n:8, 0:n:8]
    small = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    Image.fromarray(small).resize((n, n), Image.Resampling.NEAREST).save(tmp_path / "large.jpg", quality=80)
    Image.fromarray(rgb(30, 50, 1)).save(tmp_path / "tiny.jpg")
    base = ["segment", "--prompt", str(files / "ex.jpg"), str(files / "ex_mask.png"), "--weights", str(weights)]
    small_peak = _peak_kb([*base, "--out", str(tmp_path / "o1"), str(tmp_path / "tiny.jpg")])
    large_peak = _peak_kb([*base, "--out", str(tmp_path / "o2"), str(tmp_path / "large.jpg")])
    extra = (large_peak - small_peak) * 1024 / (n * n)
    assert extra < 8, f"{extra:.1f} bytes per target pixel (peaks {small_peak} and {large_peak} KB)"
    assert Image.open(tmp_path / "o2" / "large.png").size == (n, n)
    assert Image.open(tmp_path / "o2" / "large_overlay.jpg").size == (n, n)


def test_2_the_model_reads_a_large_jpeg_at_reduced_scale(tmp_path):
    from seggpt.io import read_image_reduced

    a = np.zeros((3000, 4000, 3), np.uint8)
    a[:, 2000:] = 200
    Image.fromarray(a).save(tmp_path / "p.jpg")
    img, size = read_image_reduced(tmp_path / "p.jpg", 96)
    assert size == (3000, 4000)
    assert 384 <= min(img.shape[:2]) < 768 and img.shape[1] * 3 == img.shape[0] * 4  # 1/4, then a whole factor
    assert abs(int(img[:, : img.shape[1] // 2 - 4].mean()) - 0) <= 2 and abs(int(img[:, -10:].mean()) - 200) <= 2


def test_3_eval_on_a_folder_with_a_corrupt_image_is_one_line(files, weights, capsys):
    """Was: a PIL.UnidentifiedImageError traceback."""
    write_bad("text", files / "data" / "images" / "im2.png")
    argv = ["eval", "folder", "--data", str(files / "data"), "--weights", str(weights), "--device", "cpu"]
    code = main([*argv, "--json", str(files / "r.json"), "--no-progress"])
    assert code == 2
    one_clear_line(capsys.readouterr().err, "im2.png", "cannot read image")
    assert not (files / "r.json").exists()


def test_5_a_prompt_tuned_at_another_image_size_says_so(weights):
    """Was: 'load that model (--weights)', when the same model was loaded at another --image-size."""
    import torch

    from seggpt.checkpoint import load_model
    from seggpt.tuning import LearnedPrompt, PromptMismatchError, model_fingerprint

    tuned = load_model(weights)
    h, w = tuned.config.image_size
    prompt = LearnedPrompt(
        torch.zeros(1, 3, h, w), torch.zeros(1, 3, h, w), "semantic", (1,),
        model_fingerprint(tuned), tuned.config.to_dict(),
    )  # fmt: skip
    other = load_model(weights, image_size=2 * h)
    with pytest.raises(PromptMismatchError) as e:
        prompt.check_model(other)
    message = str(e.value)
    assert f"--image-size {h}" in message and "--weights" not in message
    prompt.check_model(load_model(weights, image_size=h))  # the size it was tuned at: accepted


def test_6_overlays_are_visible_on_white_skin_and_sky():
    """Was: label 1 painted white at half opacity (invisible on white; faint on a pale face or sky)."""
    from seggpt.predictor import Prediction, build_palette

    labels = np.zeros((60, 60), np.int32)
    labels[10:50, 10:30] = 1
    labels[10:50, 30:50] = 2
    palette = build_palette(2)
    pred = Prediction(labels, palette[labels], np.ones((60, 60), np.float32), np.zeros((8, 8, 3)), palette)
    for background in ((255, 255, 255), (240, 200, 170), (200, 225, 250), (135, 206, 235), (0, 0, 0)):
        image = np.empty((60, 60, 3), np.uint8)
        image[:] = background
        out = pred.overlay(image).astype(float)
        diff = np.linalg.norm(out - image, axis=-1)
        assert (diff[labels == 0] == 0).all()  # the background is left as it is
        for k in (1, 2):
            inside = np.zeros_like(labels, bool)
            inside[15:45, 15:25] = k == 1
            inside[15:45, 35:45] = k == 2
            assert diff[inside].min() >= 50, (background, k, diff[inside].min())
    # The two labels are told apart, and each region has a contour in its full colour at its edge.
    out = pred.overlay(np.full((60, 60, 3), 128, np.uint8)).astype(int)
    assert np.linalg.norm(out[30, 20] - out[30, 40]) >= 60
    assert np.linalg.norm(out[10, 20] - out[30, 20]) >= 30 and np.ptp(out[10, 20]) >= 200  # saturated edge


def test_6_label_pngs_keep_the_model_palette(files, weights, capsys):
    from seggpt.coloring import build_palette

    assert main(segment_argv(files, weights, files / "a.jpg")) == 0
    img = Image.open(files / "out" / "a.png")
    assert img.mode == "P"
    pal = np.array(img.getpalette()[:6]).reshape(2, 3)
    np.testing.assert_array_equal(pal, build_palette(1))


def test_7_sub_folders_are_named_when_skipped_and_mirrored_with_recursive(files, weights, capsys):
    """Was: a folder's sub-folders silently ignored; no --recursive."""
    folder = files / "photos"
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    Image.fromarray(rgb(20, 24)).save(folder / "top.png")
    Image.fromarray(rgb(22, 26)).save(folder / "sub" / "top.png")  # the same name as above, another folder
    Image.fromarray(rgb(18, 28)).save(folder / "sub" / "deeper" / "x.jpg")
    Image.fromarray(rgb(18, 28)).save(folder / ".hidden" / "y.jpg")
    assert main(segment_argv(files, weights, folder)) == 0
    out, err = capsys.readouterr()
    one_clear_line(err, "sub/ (2 images)", "--recursive")
    assert ".hidden" not in err and "segmented 1 of 1" in out
    assert main([*segment_argv(files, weights, folder), "--recursive", "--overwrite"]) == 0
    assert capsys.readouterr().err == ""
    o = files / "out"
    assert Image.open(o / "top.png").size == (24, 20)
    assert Image.open(o / "sub" / "top.png").size == (26, 22)
    assert Image.open(o / "sub" / "deeper" / "x.png").size == (28, 18)
    assert (o / "sub" / "deeper" / "x_overlay.jpg").is_file() and not (o / ".hidden").exists()


def _eval_argv(files: Path, weights: Path, report: Path) -> list[str]:
    return ["eval", "folder", "--data", str(files / "data"), "--weights", str(weights), "--device", "cpu",
            "--batch-size", "1", "--json", str(report), "--no-progress"]  # fmt: skip


def _report(path: Path) -> dict:
    r = json.loads(path.read_text())
    r["run"].pop("seconds")  # how long it took is the one thing a resumed run may report differently
    return r


def test_8_eval_resumes_after_ctrl_c_with_the_same_report(files, weights, capsys, monkeypatch):
    """Was: no --resume; a Ctrl-C lost every episode done."""
    from seggpt.predictor import SegGPTPredictor

    assert main(_eval_argv(files, weights, files / "whole.json")) == 0
    calls = []
    real = SegGPTPredictor.predict_batch

    def counting(self, targets, *a, **kw):
        calls.append(len(targets))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the second batch runs
        return real(self, targets, *a, **kw)

    monkeypatch.setattr(SegGPTPredictor, "predict_batch", counting)
    report = files / "part.json"
    assert main(_eval_argv(files, weights, report)) == 130
    state = files / "part.json.state"
    assert "stopped after 2 work unit(s)" in capsys.readouterr().out and state.is_file() and not report.exists()
    assert main(_eval_argv(files, weights, report)) == 2  # neither resumed nor overwritten by accident
    one_clear_line(capsys.readouterr().err, "--resume", "--overwrite")
    calls.clear()
    assert main([*_eval_argv(files, weights, report), "--resume"]) == 0
    assert len(calls) == 1  # only the batch not done (3 targets, 2 done before the stop)
    assert _report(report) == _report(files / "whole.json") and not state.exists()


def test_8_eval_keeps_the_work_done_when_a_file_fails(files, weights, capsys):
    good = (files / "data" / "images" / "im3.png").read_bytes()
    write_bad("corrupt", files / "data" / "images" / "im3.png", files / "data" / "images" / "im1.png")
    report = files / "r.json"
    assert main(_eval_argv(files, weights, report)) == 2
    line = one_clear_line(capsys.readouterr().err, "im3.png", "r.json.state", "--resume")
    assert "2 work unit(s) done" in line
    (files / "data" / "images" / "im3.png").write_bytes(good)
    assert main([*_eval_argv(files, weights, report), "--resume"]) == 0
    assert main([*_eval_argv(files, weights, files / "whole.json")]) == 0
    assert _report(report) == _report(files / "whole.json")


def test_8_a_state_from_another_run_is_refused(files, weights, capsys, monkeypatch):
    from seggpt.predictor import SegGPTPredictor

    real = SegGPTPredictor.predict_batch

    def stop_at_once(self, *a, **kw):
        os.kill(os.getpid(), signal.SIGINT)
        return real(self, *a, **kw)

    monkeypatch.setattr(SegGPTPredictor, "predict_batch", stop_at_once)
    assert main(_eval_argv(files, weights, files / "r.json")) == 130
    capsys.readouterr()
    monkeypatch.setattr(SegGPTPredictor, "predict_batch", real)
    assert main([*_eval_argv(files, weights, files / "r.json"), "--resume", "--seed", "3"]) == 2
    one_clear_line(capsys.readouterr().err, "r.json.state", "another run", "options.seed None -> 3", "--overwrite")


# The sweep: every bad input class over every command -------------------------------------------------------
KINDS = ["missing", "corrupt", "text", "huge"]


def _sentinel(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(SENTINEL)


def _untouched(*paths: Path) -> bool:
    return all(p.read_bytes() == SENTINEL for p in paths)


@pytest.mark.parametrize("kind", KINDS)
def test_sweep_segment_target(files, weights, capsys, kind):
    bad = write_bad(kind, files / "bad.png", files / "ex_mask.png")
    out = files / "out"
    _sentinel(out / "bad.png", out / "bad_color.png", out / "bad_overlay.jpg", out / "a.png")
    code = main([*segment_argv(files, weights, files / "a.jpg", bad), "--overwrite"])
    assert code == 1
    one_clear_line(capsys.readouterr().err, "bad.png")
    assert _untouched(out / "bad.png", out / "bad_color.png", out / "bad_overlay.jpg")
    assert Image.open(out / "a.png").size == (50, 30)  # the good target is done


@pytest.mark.parametrize("which, kind", [("image", k) for k in KINDS] + [("mask", k) for k in [*KINDS, "mismatch"]])
def test_sweep_segment_prompt(files, weights, capsys, kind, which):
    if kind == "mismatch":
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(files / "bad.png")
    else:
        write_bad(kind, files / "bad.png", files / "ex_mask.png")
    prompt = ("bad.png", "ex_mask.png") if which == "image" else ("ex.jpg", "bad.png")
    _sentinel(files / "out" / "a.png")
    assert main([*segment_argv(files, weights, files / "a.jpg", prompt=prompt), "--overwrite"]) == 2
    one_clear_line(capsys.readouterr().err, "bad.png")
    assert _untouched(files / "out" / "a.png")


@pytest.fixture
def frames(files):
    folder = files / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rgb(40, 48, 20 + i)).save(folder / f"{i:05d}.png")
    return folder


@pytest.mark.parametrize("kind", ["corrupt", "text", "huge"])
def test_sweep_video_frame(files, weights, frames, capsys, kind):
    write_bad(kind, frames / "00003.png", frames / "00000.png")
    out = files / "ann"
    _sentinel(out / "00003.png")
    argv = ["video", "--frames", str(frames), "--first-mask", str(files / "ex_mask.png"), "--weights", str(weights)]
    code = main([*argv, "--device", "cpu", "--out", str(out), "--overwrite", "--no-progress"])
    assert code == 2
    one_clear_line(capsys.readouterr().err, "00003.png")
    assert _untouched(out / "00003.png")
    assert all(Image.open(out / f"{i:05d}.png").size == (48, 40) for i in range(3))  # the frames before it


@pytest.mark.parametrize("kind", [*KINDS, "mismatch"])
def test_sweep_video_first_mask(files, weights, frames, capsys, kind):
    if kind == "mismatch":
        Image.fromarray(np.ones((10, 12), np.uint8)).save(files / "bad.png")
    else:
        write_bad(kind, files / "bad.png", files / "ex_mask.png")
    out = files / "ann"
    _sentinel(out / "00000.png")
    argv = ["video", "--frames", str(frames), "--first-mask", str(files / "bad.png"), "--weights", str(weights)]
    assert main([*argv, "--device", "cpu", "--out", str(out), "--overwrite", "--no-progress"]) == 2
    one_clear_line(capsys.readouterr().err, "bad.png" if kind != "mismatch" else "10")
    assert _untouched(out / "00000.png")


def test_sweep_video_missing_frames(files, weights, capsys):
    argv = ["video", "--frames", str(files / "nothere"), "--first-mask", str(files / "ex_mask.png")]
    assert main([*argv, "--weights", str(weights), "--out", str(files / "ann"), "--no-progress"]) == 2
    one_clear_line(capsys.readouterr().err, "nothere")


@pytest.mark.parametrize(
    "which, kind",
    [("images", k) for k in ("corrupt", "text", "huge")] + [("masks", k) for k in [*KINDS, "mismatch"]],
)  # an image missing is no error (its mask is left over); a mask missing is
def test_sweep_tune_and_eval_folder(files, weights, capsys, kind, which):
    path = files / "data" / which / "im2.png"
    if kind == "mismatch":
        Image.fromarray(np.ones((10, 12), np.uint8)).save(path)
    elif kind == "missing":
        path.unlink()
    else:
        write_bad(kind, path, files / "data" / "images" / "im0.png")
    prompt, report = files / "p.safetensors", files / "r.json"
    _sentinel(prompt, report)
    tune = ["tune", "--data", str(files / "data"), "--weights", str(weights), "--out", str(prompt)]
    code = main([*tune, "--steps", "2", "--batch-size", "2", "--overwrite", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and _untouched(prompt)
    one_clear_line(err, "im2" if kind != "mismatch" else "10")
    code = main([*_eval_argv(files, weights, report), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and _untouched(report)
    if kind == "missing":  # a missing pair is a layout error: its line, then the layout the folder should have
        assert "Traceback" not in err and "im2" in err.splitlines()[0]
    else:
        one_clear_line(err, "im2" if kind != "mismatch" else "size")


def test_sweep_eval_and_segment_missing_prompt_file(files, weights, capsys):
    assert main([*_eval_argv(files, weights, files / "r.json"), "--prompt-file", str(files / "no.safetensors")]) == 2
    one_clear_line(capsys.readouterr().err, "no.safetensors")
    argv = ["segment", "--prompt-file", str(files / "no.safetensors"), "--weights", str(weights)]
    assert main([*argv, "--out", str(files / "out"), str(files / "a.jpg")]) == 2
    one_clear_line(capsys.readouterr().err, "no.safetensors")


@pytest.mark.parametrize("kind", ["missing", "text", "yaml", "no-data"])
def test_sweep_train_config(files, capsys, kind):
    config = files / "c.yaml"
    if kind == "text":
        config.write_text("just some words\n")
    elif kind == "yaml":
        config.write_text("steps: [1, 2\n")
    elif kind == "no-data":
        run = files / "run"
        config.write_text(
            f"run_dir: {run}\nsteps: 1\nbatch_size: 2\nmodel: {{preset: vit_tiny}}\n"
            f"data: {{sources: [{{type: folder, images: {files / 'nothere'}, masks: {files / 'nothere'}}}]}}\n"
        )
    assert main(["train", str(config), "--no-progress"]) == 2
    one_clear_line(capsys.readouterr().err, "c.yaml" if kind != "no-data" else "nothere")


@pytest.mark.parametrize("kind", ["corrupt", "text", "huge", "mismatch"])
def test_sweep_app_upload(weights, tmp_path, kind):
    pytest.importorskip("flask")
    from seggpt.app import Limits, Segmenter, create_app

    client = create_app(segmenter=Segmenter(weights), limits=Limits(max_upload_mb=4)).test_client()

    def png(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()

    example, mask, target = rgb(40, 48), np.zeros((40, 48), np.uint8), png(rgb(30, 50))
    mask[5:20, 5:20] = 1
    bad = {
        "corrupt": target[: len(target) // 3],
        "text": b"this is not an image",
        "huge": huge_png(tmp_path / "huge.png").read_bytes() if kind == "huge" else b"",
        "mismatch": png(np.ones((10, 12), np.uint8)),
    }[kind]
    form = {"example_0": (io.BytesIO(png(example)), "ex.png"), "task": "semantic"}
    if kind == "mismatch":
        form["mask_0"] = (io.BytesIO(bad), "bad.png")
        form["target"] = [(io.BytesIO(target), "t.png")]
    else:
        form["mask_0"] = (io.BytesIO(png(mask)), "mask.png")
        form["target"] = [(io.BytesIO(bad), "bad.png")]
    r = client.post("/api/segment", data=form, content_type="multipart/form-data")
    assert r.status_code == 400
    message = r.json["error"]
    assert "\n" not in message and "Traceback" not in message and ("bad.png" in message or "mask" in message)
