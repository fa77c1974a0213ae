"""``seggpt segment`` end to end on a tiny saved model: outputs, folders and globs, bad targets, overwrite."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seggpt.cli import main


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"ex{i}.jpg")
        lab = np.zeros((40, 48), np.uint8)
        lab[5 + i : 20, 8:30] = 1
        lab[25:35, 30:44] = 2
        Image.fromarray(lab).save(tmp_path / f"ex{i}_mask.png")
    targets = tmp_path / "targets"
    targets.mkdir()
    sizes = {"a.jpg": (30, 50), "b.png": (64, 20), "c.png": (33, 33)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(targets / name)
    extra = tmp_path / "more"
    extra.mkdir()
    Image.fromarray(rng.integers(0, 256, (26, 28), dtype=np.uint8)).save(extra / "grey.png")
    return tmp_path, {**sizes, "grey.png": (26, 28)}


def prompt_args(root, n=2):
    args = []
    for i in range(n):
        args += ["--prompt", str(root / f"ex{i}.jpg"), str(root / f"ex{i}_mask.png")]
    return args


def test_segment_end_to_end(files, weights, capsys):
    root, sizes = files
    out = root / "out"
    argv = ["segment", *prompt_args(root), "--weights", str(weights), "--batch-size", "2", "--out", str(out)]
    code = main([*argv, str(root / "targets"), str(root / "more" / "*.png")])
    assert code == 0, capsys.readouterr().err
    for name, (h, w) in sizes.items():
        stem = name.rsplit(".", 1)[0]
        labels = Image.open(out / f"{stem}.png")
        assert labels.mode == "P" and labels.size == (w, h)
        assert set(np.unique(np.asarray(labels)).tolist()) <= {0, 1, 2}
        color = Image.open(out / f"{stem}_color.png")
        assert color.mode == "RGB" and color.size == (w, h)
        assert Image.open(out / f"{stem}_overlay.jpg").size == (w, h)
    assert "segmented 4 of 4" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left

    # Existing outputs are kept unless --overwrite.
    before = (out / "a.png").read_bytes()
    assert main([*argv, "--ensemble", "spatial", str(root / "targets")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "a.png").read_bytes() == before
    rerun = [*argv, "--ensemble", "spatial", "--dtype", "bf16", "--overwrite", "--no-progress", str(root / "targets")]
    assert main(rerun) == 0
    assert Image.open(out / "a.png").size == (50, 30)


def test_no_embedded_model_says_use_weights(files, monkeypatch, capsys):
    import seggpt.checkpoint

    root, _ = files
    monkeypatch.setattr(seggpt.checkpoint, "EMBEDDED_WEIGHTS", root / "absent.safetensors")
    code = main(["segment", *prompt_args(root, 1), "--out", str(root / "o"), str(root / "targets")])
    err = capsys.readouterr().err
    assert code == 2 and "no embedded model" in err and "--weights" in err


def test_bad_targets_are_reported_and_the_rest_done(files, weights, capsys):
    root, _ = files
    good = Image.open(root / "targets" / "a.jpg")
    good.save(root / "targets" / "full.png")
    data = (root / "targets" / "full.png").read_bytes()
    (root / "targets" / "full.png").unlink()
    (root / "targets" / "truncated.png").write_bytes(data[: len(data) // 3])
    out = root / "out"
    code = main(
        ["segment", *prompt_args(root, 1), "--weights", str(weights), "--out", str(out), "--no-progress",
         str(root / "targets"), str(root / "nothere.jpg")]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert "truncated.png" in captured.err and "nothere.jpg" in captured.err and "2 could not be read" in captured.out
    assert len(captured.err.strip().splitlines()) == 2  # one line for each, saying why
    assert sorted(p.name for p in out.glob("*_color.png")) == ["a_color.png", "b_color.png", "c_color.png"]


def test_prompt_errors_exit_2_with_a_clear_line(files, weights, capsys):
    root, _ = files
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "small_mask.png")
    base = ["segment", "--weights", str(weights), "--out", str(root / "o"), str(root / "targets")]
    assert main([*base, "--prompt", str(root / "ex0.jpg"), str(root / "small_mask.png")]) == 2
    err = capsys.readouterr().err
    assert "10x10" in err and "48x40" in err and "small_mask.png" in err
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(root / "empty.png")
    assert main([*base, "--prompt", str(root / "ex0.jpg"), str(root / "empty.png"), "--no-progress"]) == 0
    assert "warning: prompt 0: the mask" in capsys.readouterr().err
    assert main([*base[:-1], str(root / "none*.png"), *prompt_args(root, 1)]) == 1  # a glob that matches nothing


def test_same_stem_twice_is_refused(files, weights, capsys):
    root, _ = files
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "more" / "a.png")
    code = main(["segment", *prompt_args(root, 1), "--weights", str(weights), "--out", str(root / "o"),
                 str(root / "targets"), str(root / "more")])  # fmt: skip
    assert code == 2 and "a.png" in capsys.readouterr().err


def test_targets_may_come_before_and_after_options(files, weights, capsys):
    """argparse alone ends TARGET... at the first option and refuses the targets after it."""
    root, _ = files
    out = root / "mixed"
    argv = ["segment", str(root / "targets" / "a.jpg"), *prompt_args(root, 1), "--weights", str(weights)]
    assert main([*argv, "--out", str(out), str(root / "targets" / "b.png"), "--no-progress"]) == 0
    assert sorted(p.name for p in out.glob("*_color.png")) == ["a_color.png", "b_color.png"]
    with pytest.raises(SystemExit) as e:  # an unknown option is still refused, as argparse refuses it
        main([*argv, "--out", str(out), "--bogus", str(root / "targets" / "b.png")])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
