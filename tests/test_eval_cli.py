"""``seggpt eval`` end to end with the real predictor on a random ``vit_tiny`` model, and sharding with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import randomize_
from eval_fixtures import write_davis, write_fss
from seggpt import SegGPT, save_native, vit_tiny
from seggpt.cli import main
from seggpt.eval import EvalOptions, Shard, evaluate, get, run_local
from seggpt.predictor import SegGPTPredictor


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_(SegGPT(vit_tiny()), std=0.1).eval()
    with torch.no_grad():  # answers around mid-grey, so that random weights paint both black and white pixels
        model.decoder_pred[3].bias.copy_(torch.tensor([0.066, 0.196, 0.418]))
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_native(model, path)
    return path


def test_cli_writes_json_and_markdown(tmp_path, tiny_weights, capsys):
    data = write_fss(tmp_path / "fss")
    out = tmp_path / "out" / "fss.json"
    argv = ["eval", "fss1000", "--data", str(data), "--weights", str(tiny_weights), "--shots", "2"]
    argv += ["--json", str(out), "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["benchmark"] == "fss1000"
    assert 0.0 <= report["metrics"]["mIoU"] <= 100.0
    assert report["protocol"]["shots"] == 2 and report["protocol"]["episodes"] == 6
    assert report["paper"]["mIoU"] == 89.3 and report["run"]["world_size"] == 1
    assert report["run"]["image_size"] == [32, 32]  # vit_tiny's own
    md = out.with_suffix(".md").read_text()
    assert "| mIoU |" in md and "89.3" in md
    assert "wrote" in capsys.readouterr().out
    # Never replaces a report without --overwrite.
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0


def test_cli_layout_error_is_one_clear_line(tmp_path, tiny_weights, capsys):
    argv = ["eval", "pascal5i", "--data", str(tmp_path / "voc"), "--weights", str(tiny_weights)]
    assert main(argv + ["--json", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "Expected layout" in err and "SegmentationClassAug" in err


def test_real_predictor_sharded_equals_unsharded(tmp_path, tiny_weights):
    data = write_fss(tmp_path / "fss")
    options = EvalOptions(shots=2, ensemble="feature")
    b = get("fss1000")
    whole = evaluate(b, SegGPTPredictor(tiny_weights), data, options)
    states = [run_local(b, SegGPTPredictor(tiny_weights), data, options, Shard(r, 2)) for r in range(2)]
    split = b.summarize(states, options)
    assert 0.0 < whole.metrics["mIoU"] < 100.0  # non-trivial answers: the comparison below can fail
    assert split.metrics == whole.metrics and split.details == whole.details


def test_davis_with_the_real_video_predictor(tmp_path, tiny_weights):
    data = write_davis(tmp_path / "davis", sequences=("bear",))
    r = evaluate("davis2017", SegGPTPredictor(tiny_weights), data, EvalOptions(context_frames=2))
    assert 0.0 <= r.metrics["J&F-Mean"] <= 100.0
    assert r.protocol["context_frames"] == 2 and r.details["objects"] == 2


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_torchrun_two_ranks_equal_one(tmp_path, tiny_weights):
    """A real ``torchrun --nproc_per_node 2`` run (gloo) gathers the same numbers as one process."""
    data = write_fss(tmp_path / "fss")
    common = ["eval", "fss1000", "--data", str(data), "--weights", str(tiny_weights), "--no-progress"]
    assert main(common + ["--json", str(tmp_path / "one.json")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "seggpt.cli"]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd + common + ["--json", str(tmp_path / "two.json")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["run"]["world_size"] == 2
    assert two["metrics"] == one["metrics"] and two["details"] == one["details"]
    print(f"torchrun run took {time.perf_counter() - start:.1f} s")


def test_cli_image_size_runs_the_model_on_another_grid(tmp_path, tiny_weights):
    data = write_fss(tmp_path / "fss")
    out = tmp_path / "fss48.json"
    argv = ["eval", "fss1000", "--data", str(data), "--weights", str(tiny_weights), "--image-size", "48"]
    assert main(argv + ["--json", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["run"]["image_size"] == [48, 48]
    assert main(argv[:-1] + ["20", "--json", str(tmp_path / "bad.json"), "--no-progress"]) == 2  # not a multiple of 8
    assert not (tmp_path / "bad.json").exists()


def test_the_embedded_model_runs_video_at_its_video_size(tmp_path, tiny_weights, monkeypatch):
    """Without --image-size the embedded model segments still images at EMBEDDED_IMAGE_SIZE and video (eval
    davis2017, SegGPTVideoPredictor) at EMBEDDED_VIDEO_IMAGE_SIZE; any other checkpoint keeps its own size, and an
    explicit size wins."""
    import seggpt.checkpoint as ck
    from seggpt.video import SegGPTVideoPredictor

    monkeypatch.setattr(ck, "EMBEDDED_WEIGHTS", tiny_weights)
    monkeypatch.setattr(ck, "EMBEDDED_IMAGE_SIZE", 48)
    monkeypatch.setattr(ck, "EMBEDDED_VIDEO_IMAGE_SIZE", 64)
    davis, fss = write_davis(tmp_path / "davis", sequences=("bear",)), write_fss(tmp_path / "fss")

    def size(benchmark, data, *extra):
        out = tmp_path / f"report{len(list(tmp_path.glob('report*.json')))}.json"
        argv = ["eval", benchmark, "--data", str(data), "--json", str(out), "--no-progress", "--device", "cpu"]
        assert main(argv + list(extra)) == 0
        return json.loads(out.read_text())["run"]["image_size"]

    assert size("davis2017", davis, "--context-frames", "1") == [64, 64]
    assert size("fss1000", fss) == [48, 48]
    assert size("davis2017", davis, "--context-frames", "1", "--image-size", "32") == [32, 32]
    other = tmp_path / "other.safetensors"  # the same weights under another name: not the embedded model
    other.write_bytes(tiny_weights.read_bytes())
    assert size("davis2017", davis, "--context-frames", "1", "--weights", str(other)) == [32, 32]
    assert SegGPTVideoPredictor(device="cpu").image_size == (64, 64)
    assert SegGPTVideoPredictor(str(tiny_weights), device="cpu").image_size == (64, 64)  # its file, by path
    assert ck.default_image_size(other, video=True) is None and ck.default_image_size(None, video=True) == 64


def test_the_embedded_model_keeps_its_own_video_context(tmp_path, tiny_weights, monkeypatch):
    """Without a context, video keeps EMBEDDED_VIDEO_CONTEXT recent frames with the embedded model
    (SegGPTVideoPredictor, `seggpt video`) and the paper's 8 with anything else; `seggpt eval davis2017` keeps the
    protocol's 8 for every model, and an explicit number wins everywhere."""
    import seggpt.checkpoint as ck
    from seggpt.video import SegGPTVideoPredictor

    monkeypatch.setattr(ck, "EMBEDDED_WEIGHTS", tiny_weights)
    monkeypatch.setattr(ck, "EMBEDDED_VIDEO_IMAGE_SIZE", 32)
    monkeypatch.setattr(ck, "EMBEDDED_VIDEO_CONTEXT", 3)  # neither 2 nor 8: the constant is what decides
    other = tmp_path / "other.safetensors"  # the same weights under another name: not the embedded model
    other.write_bytes(tiny_weights.read_bytes())

    assert SegGPTVideoPredictor(device="cpu").context == 3
    assert SegGPTVideoPredictor(str(tiny_weights), device="cpu").context == 3  # its file, by path
    assert SegGPTVideoPredictor(str(other), device="cpu").context == 8
    assert SegGPTVideoPredictor(SegGPT(vit_tiny()), device="cpu").context == 8  # a given model: the paper's
    assert SegGPTVideoPredictor(device="cpu", context=5).context == 5
    assert SegGPTVideoPredictor(predictor=SegGPTPredictor(device="cpu")).context == 3
    assert SegGPTVideoPredictor(predictor=object(), image_size=(32, 32)).context == 8  # a predictor without one

    seen = []
    reset = SegGPTVideoPredictor.reset
    monkeypatch.setattr(SegGPTVideoPredictor, "reset", lambda self: seen.append(self.context) or reset(self))
    davis = write_davis(tmp_path / "davis", sequences=("bear",))
    frames = davis / "JPEGImages" / "480p" / "bear"
    first = davis / "Annotations" / "480p" / "bear" / "00000.png"
    base = ["video", "--frames", str(frames), "--first-mask", str(first), "--no-progress", "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--weights", str(other)]) == 0
    assert main([*base, "--out", str(tmp_path / "c"), "--context", "1"]) == 0
    assert seen[0] == 3 and seen[-1] == 1 and 8 in seen

    out = tmp_path / "davis.json"
    argv = ["eval", "davis2017", "--data", str(davis), "--json", str(out), "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    assert json.loads(out.read_text())["protocol"]["context_frames"] == 8


def test_the_embedded_model_decodes_at_its_own_threshold(tmp_path, tiny_weights, monkeypatch, capsys):
    """Without --threshold the embedded model decodes still images at EMBEDDED_THRESHOLD and video at
    EMBEDDED_VIDEO_THRESHOLD; any other checkpoint by the nearest colour (0.5); an explicit threshold wins, and
    one outside (0, 1) is one line before anything runs."""
    import seggpt.checkpoint as ck
    from seggpt.video import SegGPTVideoPredictor

    monkeypatch.setattr(ck, "EMBEDDED_WEIGHTS", tiny_weights)
    monkeypatch.setattr(ck, "EMBEDDED_IMAGE_SIZE", 32)
    monkeypatch.setattr(ck, "EMBEDDED_VIDEO_IMAGE_SIZE", 32)
    monkeypatch.setattr(ck, "EMBEDDED_THRESHOLD", 0.35)  # the constants decide, whatever their values
    monkeypatch.setattr(ck, "EMBEDDED_VIDEO_THRESHOLD", 0.45)
    davis, fss = write_davis(tmp_path / "davis", sequences=("bear",)), write_fss(tmp_path / "fss")
    other = tmp_path / "other.safetensors"  # the same weights under another name: not the embedded model
    other.write_bytes(tiny_weights.read_bytes())

    def threshold(benchmark, data, *extra):
        out = tmp_path / f"report{len(list(tmp_path.glob('report*.json')))}.json"
        argv = ["eval", benchmark, "--data", str(data), "--json", str(out), "--no-progress", "--device", "cpu"]
        assert main(argv + list(extra)) == 0
        return json.loads(out.read_text())["run"]["threshold"]

    assert threshold("fss1000", fss) == 0.35
    assert threshold("davis2017", davis, "--context-frames", "1") == 0.45
    assert threshold("fss1000", fss, "--weights", str(other)) == 0.5
    assert threshold("davis2017", davis, "--context-frames", "1", "--weights", str(other)) == 0.5
    assert threshold("fss1000", fss, "--threshold", "0.2") == 0.2
    assert SegGPTVideoPredictor(device="cpu").predictor.threshold == 0.45
    assert SegGPTVideoPredictor(str(other), device="cpu").predictor.threshold == 0.5
    capsys.readouterr()
    for bad in ("1.5", "0", "half"):
        with pytest.raises(SystemExit) as e:
            main(["eval", "fss1000", "--data", str(fss), "--threshold", bad, "--json", str(tmp_path / "bad.json")])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "--threshold" in err and bad in err and "Traceback" not in err
    assert not (tmp_path / "bad.json").exists()


def test_a_stopped_davis_run_stops_inside_the_sequence_and_resumes_to_the_same_report(
    tmp_path, tiny_weights, monkeypatch, capsys
):
    """Was: Ctrl-C or SIGTERM waited for the sequence under way to finish (minutes for a DAVIS video)."""
    import signal

    from seggpt.video import SegGPTVideoPredictor

    davis = write_davis(tmp_path / "davis", sequences=("bear", "camel"))
    argv = ["eval", "davis2017", "--data", str(davis), "--weights", str(tiny_weights), "--context-frames", "2"]
    argv += ["--no-progress", "--device", "cpu"]
    assert main([*argv, "--json", str(tmp_path / "whole.json")]) == 0

    frames, resumed = [], []
    propagate = SegGPTVideoPredictor.propagate

    def stopping(self, paths, *a, **kw):
        for t, labels in propagate(self, paths, *a, **kw):
            frames.append((paths[t].split(os.sep)[-2], t))
            if frames[-1] == ("camel", 1) and not resumed:
                os.kill(os.getpid(), signal.SIGTERM)  # the second sequence's second frame
            yield t, labels

    monkeypatch.setattr(SegGPTVideoPredictor, "propagate", stopping)
    report = tmp_path / "part.json"
    assert main([*argv, "--json", str(report)]) == 130
    out, err = capsys.readouterr()
    assert "stopped after 1 work unit(s)" in out and not report.exists()
    assert "SIGTERM: stopping after this work unit (a video at its next frame)" in err
    assert frames[-1] == ("camel", 1)  # not the camel's last frame (4)
    frames.clear()
    resumed.append(True)
    assert main([*argv, "--json", str(report), "--resume"]) == 0
    assert [s for s, _ in frames] == ["camel"] * 5  # the stopped sequence again, from its first frame

    def scores(path):
        r = json.loads(path.read_text())
        return r["metrics"], r["details"]

    assert scores(report) == scores(tmp_path / "whole.json")
    assert not (tmp_path / "part.json.state").exists()
