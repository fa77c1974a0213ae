"""The web app's server, through Flask's test client: results equal the library's, limits and bad files give
clear messages, downloads, video targets, the CLI. The real-browser test is tests/test_app_browser.py."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("flask")

from seggpt.app import Limits, Segmenter, create_app, is_loopback  # noqa: E402
from seggpt.predictor import SegGPTPredictor  # noqa: E402


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data))).astype(np.int64)


@pytest.fixture(scope="module")
def segmenter(weights) -> Segmenter:
    return Segmenter(weights)


@pytest.fixture(scope="module")
def direct(weights) -> SegGPTPredictor:
    """The library's predictor on the same weights: what the page must reproduce exactly."""
    return SegGPTPredictor(model=weights)


@pytest.fixture
def client(segmenter):
    return create_app(segmenter=segmenter, limits=Limits(max_upload_mb=2, max_pixels=200_000)).test_client()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    example = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    labels = np.zeros((48, 64), np.uint8)
    labels[5:25, 5:30] = 1
    labels[25:45, 30:60] = 2
    targets = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), rng.integers(0, 256, (30, 70, 3), dtype=np.uint8)]
    return example, labels, targets


def _form(example, mask_png=None, painted_png=None, targets=(), **fields):
    form = {"example_0": (io.BytesIO(_png(example)), "ex.png"), **fields}
    if mask_png is not None:
        form["mask_0"] = (io.BytesIO(mask_png), "mask.png")
    if painted_png is not None:
        form["painted_0"] = (io.BytesIO(painted_png), "painted_0.png")
    form["target"] = [(io.BytesIO(b), name) for b, name in targets]
    return form


def test_segment_equals_library(client, direct, data):
    example, labels, targets = data
    form = _form(example, mask_png=_png(labels), targets=[(_png(t), f"t{i}.png") for i, t in enumerate(targets)])
    form["num_labels"] = "8"
    r = client.post("/api/segment", data=form, content_type="multipart/form-data")
    assert r.status_code == 200, r.json
    j = r.json
    direct.set_prompts([example], [labels], task="semantic", num_labels=8)
    assert [res["name"] for res in j["results"]] == ["t0.png", "t1.png"]
    for res, target in zip(j["results"], targets, strict=True):
        expected = direct.predict(target)
        assert len(np.unique(expected.labels)) >= 2, "a varied answer, so that equality means something"
        got = _decode_png(client.get(res["files"]["labels"]).data)
        assert got.shape == target.shape[:2] == (res["height"], res["width"])
        np.testing.assert_array_equal(got, expected.labels)
        np.testing.assert_array_equal(_decode_png(client.get(res["files"]["color"]).data), expected.color)
        assert res["labels"] == sorted(np.unique(expected.labels).tolist())
    # the zip holds every file of the run
    z = zipfile.ZipFile(io.BytesIO(client.get(j["zip"]).data))
    assert len(z.namelist()) == 3 * len(targets)


def test_painted_mask_is_a_label_map_in_the_red_channel(client, direct, data):
    example, labels, targets = data
    rgba = np.zeros((*labels.shape, 4), np.uint8)
    rgba[..., 0] = labels  # the page sends R = label (G, B copies, A = 255)
    rgba[..., 1] = labels
    rgba[..., 2] = labels
    rgba[..., 3] = 255
    form = _form(example, painted_png=_png(rgba), targets=[(_png(targets[0]), "t.png")], task="instance")
    r = client.post("/api/segment", data=form, content_type="multipart/form-data")
    assert r.status_code == 200, r.json
    direct.set_prompts([example], [labels.astype(np.int64)], task="instance")
    np.testing.assert_array_equal(
        _decode_png(client.get(r.json["results"][0]["files"]["labels"]).data), direct.predict(targets[0]).labels
    )
    # what was painted comes back as a reusable label map
    np.testing.assert_array_equal(_decode_png(client.get(r.json["prompts"][0]).data), labels)


@pytest.mark.parametrize("ensemble", ["auto", "spatial", "none"])
def test_two_examples_and_the_ensemble_picker(client, direct, data, ensemble):
    example, labels, targets = data
    second = np.ascontiguousarray(example[::-1])
    form = _form(example, mask_png=_png(labels), targets=[(_png(targets[1]), "t.png")], ensemble=ensemble)
    form["example_1"] = (io.BytesIO(_png(second)), "ex2.png")
    form["mask_1"] = (io.BytesIO(_png(np.ascontiguousarray(labels[::-1]))), "mask2.png")
    r = client.post("/api/segment", data=form, content_type="multipart/form-data")
    assert r.status_code == 200, r.json
    direct.set_prompts([example, second], [labels, labels[::-1]], ensemble=None if ensemble == "auto" else ensemble)
    assert direct.ensemble == {"auto": "feature"}.get(ensemble, ensemble)
    got = _decode_png(client.get(r.json["results"][0]["files"]["labels"]).data)
    np.testing.assert_array_equal(got, direct.predict(targets[1]).labels)


@pytest.mark.parametrize(
    "case, status, message",
    [
        ("text_target", 400, "target 1 (notes.txt) is not an image"),
        ("truncated_target", 400, "damaged or truncated"),
        ("huge_target", 400, "the limit is 0.2 MP"),
        ("mask_size", 400, "is 10x10 but the image is 64x48"),
        ("no_mask", 400, "has no mask"),
        ("empty_painted", 400, "is empty: paint the object"),
        ("no_target", 400, "add at least one target"),
        ("bad_task", 400, "task must be one of semantic, instance"),
        ("bad_labels", 400, "whole number"),
        ("too_few_labels", 400, "raise num_labels"),
        ("bad_threshold", 400, "threshold must be between 0 and 1 (exclusive), got 1.5"),
        ("word_threshold", 400, "threshold must be a number between 0 and 1 or empty, got 'low'"),
        ("too_big", 413, "larger than the limit of 2 MB"),
    ],
)
def test_bad_requests_get_clear_messages(client, data, case, status, message):
    example, labels, targets = data
    good_target = [(_png(targets[0]), "t.png")]
    kw = {"mask_png": _png(labels), "targets": good_target}
    if case == "text_target":
        kw["targets"] = [(b"just some text\n", "notes.txt")]
    elif case == "truncated_target":
        kw["targets"] = [(_png(targets[0])[:200], "cut.png")]
    elif case == "huge_target":
        kw["targets"] = [(_png(np.zeros((500, 500, 3), np.uint8)), "big.png")]
    elif case == "mask_size":
        kw["mask_png"] = _png(np.zeros((10, 10), np.uint8))
    elif case == "no_mask":
        kw.pop("mask_png")
    elif case == "empty_painted":
        kw.pop("mask_png")
        kw["painted_png"] = _png(np.zeros((48, 64, 4), np.uint8))
    elif case == "no_target":
        kw["targets"] = []
    elif case == "bad_task":
        kw["task"] = "panoptic"
    elif case == "bad_labels":
        kw["num_labels"] = "two"
    elif case == "too_few_labels":
        kw["num_labels"] = "1"
    elif case == "bad_threshold":
        kw["threshold"] = "1.5"
    elif case == "word_threshold":
        kw["threshold"] = "low"
    elif case == "too_big":
        kw["targets"] = [(np.random.default_rng(0).bytes(3 * 2**20), "noise.png")]
    r = client.post("/api/segment", data=_form(example, **kw), content_type="multipart/form-data")
    assert r.status_code == status
    assert message in r.json["error"], r.json


def test_threshold_per_request(client, segmenter, direct, data):
    """A request's threshold decodes that request only, as the library decodes at it; empty is the model's own."""
    example, labels, targets = data
    mask = (labels > 0).astype(np.uint8)
    got = {}
    for t in ("0.2", "", "0.8"):
        form = _form(example, mask_png=_png(mask), targets=[(_png(targets[0]), "t.png")], threshold=t)
        r = client.post("/api/segment", data=form, content_type="multipart/form-data")
        assert r.status_code == 200, r.json
        got[t] = _decode_png(client.get(r.json["results"][0]["files"]["labels"]).data)
    assert segmenter.predictor.threshold == 0.5  # a checkpoint other than the embedded model: the nearest colour
    direct.set_prompts([example], [mask])
    raw = direct.predict(targets[0])
    for t in ("0.2", "0.8"):
        direct.threshold = float(t)
        try:
            np.testing.assert_array_equal(got[t], direct.predict(targets[0]).labels)
        finally:
            direct.threshold = 0.5
    np.testing.assert_array_equal(got[""], raw.labels)
    assert (got["0.2"] > 0).sum() > (got[""] > 0).sum() >= (got["0.8"] > 0).sum()


def test_two_sizes_per_request(client, segmenter, weights, data):
    """ "Two sizes" segments like the library's predictor with scales (1, 1.5), for that request only."""
    example, labels, targets = data
    got = {}
    for detail in ("1", ""):
        form = _form(example, mask_png=_png(labels), targets=[(_png(targets[0]), "t.png")], detail=detail)
        form["num_labels"] = "8"
        r = client.post("/api/segment", data=form, content_type="multipart/form-data")
        assert r.status_code == 200, r.json
        got[detail] = _decode_png(client.get(r.json["results"][0]["files"]["labels"]).data)
    views = SegGPTPredictor(model=weights, scales=(1, 1.5))
    views.set_prompts([example], [labels], task="semantic", num_labels=8)
    np.testing.assert_array_equal(got["1"], views.predict(targets[0]).labels)
    assert not np.array_equal(got["1"], got[""]), "the views must change the answer for equality to mean something"
    assert segmenter._detail.model is segmenter.predictor.model  # views of the same weights, not a second copy
    for extra, message in (({"ensemble": "spatial"}, "not the spatial one"), ({"video": True}, "a video runs at one")):
        form = _form(example, mask_png=_png(labels), targets=[] if "video" in extra else [(_png(targets[0]), "t.png")])
        form["detail"] = "1"
        if "video" in extra:
            form["video"] = (io.BytesIO(b"not read"), "v.mp4")
        else:
            form.update(extra)
        r = client.post("/api/segment", data=form, content_type="multipart/form-data")
        assert r.status_code == 400 and message in r.json["error"], r.json


def test_page_info_and_downloads(client):
    page = client.get("/")
    assert page.status_code == 200 and b'id="example-input"' in page.data
    assert client.get("/static/app.js").status_code == 200
    info = client.get("/api/info").json
    assert info["limits"]["max_upload_bytes"] == 2 * 2**20 and info["image_size"] == [32, 32]
    assert info["threshold"] == info["video_threshold"] == 0.5
    r = client.get("/api/result/0123456789abcdef/x.png")
    assert r.status_code == 404 and "no longer kept" in r.json["error"]


@pytest.mark.parametrize("kind", ["gif", "mp4"])
def test_video_equals_video_predictor(client, weights, tmp_path, kind):
    from seggpt.video import SegGPTVideoPredictor

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (32, 40, 3), dtype=np.uint8) for _ in range(3)]
    if kind == "gif":
        buf = io.BytesIO()
        Image.fromarray(frames[0]).save(
            buf, format="GIF", save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]], duration=100
        )
        gif = buf.getvalue()
        decoded = _gif_frames(gif)  # GIF quantises colours: compare on the decoded frames
    else:
        pytest.importorskip("av")
        from seggpt.video_io import open_frames, write_video

        path = write_video(tmp_path / "clip.mp4", frames, fps=10)
        gif = path.read_bytes()
        decoded = list(open_frames(path))  # lossy: compare on what the decoder gives back
    assert len(decoded) == 3
    first = np.zeros((32, 40), np.uint8)
    first[4:20, 4:30] = 1
    first[20:30, 10:38] = 2
    form = {
        "example_0": (io.BytesIO(_png(decoded[0])), "frame0.png"),
        "mask_0": (io.BytesIO(_png(first)), "mask.png"),
        "video": (io.BytesIO(gif), f"clip.{kind}"),
        "task": "instance",
    }
    r = client.post("/api/segment", data=form, content_type="multipart/form-data")
    assert r.status_code == 200, r.json
    results = r.json["results"]
    assert len(results) == 3 and results[0]["files"]["animation"].endswith("clip_overlay.gif")
    assert client.get(results[0]["files"]["animation"]).mimetype == "image/gif"
    expected = [lab for _, lab in SegGPTVideoPredictor(model=weights, task="instance").propagate(decoded, first)]
    for res, exp in zip(results, expected, strict=True):
        np.testing.assert_array_equal(_decode_png(client.get(res["files"]["labels"]).data), exp)
    # the first frame as the page fetches it to paint on
    ff = client.post("/api/first_frame", data={"video": (io.BytesIO(gif), f"clip.{kind}")})
    np.testing.assert_array_equal(_decode_png(ff.data), decoded[0])
    bad = client.post("/api/first_frame", data={"video": (io.BytesIO(b"not a video"), "clip.mp4")})
    assert bad.status_code == 400 and "could not be decoded as a video" in bad.json["error"]


def _gif_frames(data: bytes) -> list[np.ndarray]:
    from PIL import ImageSequence

    # convert inside the loop: the iterator moves one image object from frame to frame
    return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(io.BytesIO(data)))]


def test_localhost_by_default_and_cli_errors(capsys):
    from seggpt.cli import build_parser, main

    args = build_parser().parse_args(["app"])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.weights is None
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert main(["app", "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be positive" in capsys.readouterr().err
    assert main(["app", "--weights", "/nonexistent/w.safetensors", "--port", "0"]) == 2
    assert "error" in capsys.readouterr().err


def test_cli_says_when_the_port_is_taken(weights, capsys):
    import socket

    from seggpt.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["app", "--weights", str(weights), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_stopping_the_server_waits_for_running_requests():
    """Ctrl-C used to leave request threads running as daemons: one still inside torch when the interpreter shut
    down aborted the process ("terminate called without an active exception"). server_close() now joins them."""
    import threading
    import time
    import urllib.request

    from seggpt.app import make_server

    started, finished = threading.Event(), threading.Event()

    def slow_app(environ, start_response):
        started.set()
        time.sleep(0.5)
        finished.set()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    server = make_server(slow_app, "127.0.0.1", 0)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    replies = []

    def fetch():
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/", timeout=10) as r:
            replies.append((r.read(), r.headers.get("Connection"), r.version))

    client = threading.Thread(target=fetch)
    client.start()
    assert started.wait(10)
    server.shutdown()  # serve_forever returns and closes the server, as after Ctrl-C in `seggpt app`
    serving.join(10)
    assert finished.is_set(), "the server closed while a request was still running"
    client.join(10)
    # one request per connection (HTTP/1.0), so a request thread ends with its request
    assert replies == [(b"done", "close", 10)]


def test_the_embedded_model_propagates_video_at_its_video_size_and_context(weights, monkeypatch, tmp_path):
    """The app runs the embedded model's video at EMBEDDED_VIDEO_IMAGE_SIZE with EMBEDDED_VIDEO_CONTEXT recent
    frames, as `seggpt video` does, and still images at EMBEDDED_IMAGE_SIZE; any other checkpoint, or an explicit
    size, serves both from one model (any other checkpoint with the paper's 8 recent frames). Portrait frames get
    the video size turned to portrait."""
    import seggpt.checkpoint as ck
    from seggpt.video import SegGPTVideoPredictor

    monkeypatch.setattr(ck, "EMBEDDED_WEIGHTS", weights)
    monkeypatch.setattr(ck, "EMBEDDED_IMAGE_SIZE", 48)
    monkeypatch.setattr(ck, "EMBEDDED_VIDEO_IMAGE_SIZE", (32, 64))
    monkeypatch.setattr(ck, "EMBEDDED_VIDEO_CONTEXT", 3)

    def clip(h, w):
        frames = np.random.default_rng(0).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        first = np.zeros((h, w), np.int64)
        first[4:20, 4:20] = 1
        return list(frames), first

    embedded = Segmenter(None, device="cpu")
    assert embedded.predictor.config.image_size == (48, 48)
    labels = embedded.run_video(*clip(40, 80), "instance")
    assert [a.shape for a in labels] == [(40, 80)] * 2
    video = embedded._video
    landscape = video.predictor
    assert landscape.config.image_size == (32, 64) and video.context == 3
    embedded.run_video(*clip(80, 40), "instance")
    assert video.predictor.config.image_size == (64, 32)  # portrait frames: the size turned
    embedded.run_video(*clip(30, 90), "instance")
    assert embedded._video is video and video.predictor is landscape  # each orientation loaded once
    assert embedded.predictor.config.image_size == (48, 48)  # still images keep theirs
    explicit = Segmenter(None, device="cpu", image_size=32)
    explicit.run_video(*clip(80, 40), "instance")
    assert explicit._video is None  # one model serves both
    context = []
    monkeypatch.setattr(SegGPTVideoPredictor, "propagate", lambda vp, *a, **k: context.append(vp.context) or [])
    explicit.run_video([], np.zeros((4, 4), np.int64), "instance")
    assert context == [3]
    # Video is read at the video threshold whichever predictor runs it; images keep theirs.
    monkeypatch.setattr(ck, "EMBEDDED_THRESHOLD", 0.35)
    monkeypatch.setattr(ck, "EMBEDDED_VIDEO_THRESHOLD", 0.45)
    read_at = []
    monkeypatch.setattr(
        SegGPTVideoPredictor, "propagate", lambda vp, *a, **k: read_at.append(vp.predictor.threshold) or []
    )
    for seg in (Segmenter(None, device="cpu"), Segmenter(None, device="cpu", image_size=32)):
        assert (seg.info()["threshold"], seg.info()["video_threshold"]) == (0.35, 0.45)
        seg.run_video([], np.zeros((4, 4), np.int64), "instance")
        seg.run_video([], np.zeros((4, 4), np.int64), "instance", threshold=0.6)
        assert seg.predictor.threshold == 0.35
    assert read_at == [0.45, 0.6, 0.45, 0.6]
    other = tmp_path / "other.safetensors"  # the same weights under another name: not the embedded model
    other.write_bytes(weights.read_bytes())
    plain = Segmenter(str(other), device="cpu")
    seen = []
    monkeypatch.setattr(SegGPTVideoPredictor, "propagate", lambda vp, *a, **k: seen.append(vp) or [])
    plain.run_video([], np.zeros((4, 4), np.int64), "instance")
    assert plain._video is None and seen[0].predictor is plain.predictor and seen[0].context == 8
