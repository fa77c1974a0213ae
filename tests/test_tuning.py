"""In-context tuning: only the prompt learns, prompts round-trip, other models are refused, resume is exact."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from seggpt import SegGPT, vit_tiny
from seggpt.checkpoint import save_native
from seggpt.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from seggpt.tuning import (
    LearnedPrompt,
    PromptMismatchError,
    TuneConfig,
    load_prompt_into,
    load_prompts,
    model_fingerprint,
    open_folder,
    prompt_loss,
    save_prompts,
    segment_per_class,
    segment_tensors,
    soft_iou_loss,
    tune,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny model's ops are too small to split across threads; one thread is faster and steadier when the
    machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0) -> SegGPT:
    torch.manual_seed(seed)
    model = SegGPT(vit_tiny())
    with torch.no_grad():  # non-zero tokens everywhere, so the prompt matters through every path
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


class Squares:
    """Items of two classes: label 1 a bright square, label 2 a dark-red square, on grey; (h, w) from the model."""

    def __init__(self, size: tuple[int, int], n: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        h, w = size
        self.items = []
        for i in range(n):
            lab = torch.zeros(h, w, dtype=torch.long)
            for c in (1,) if i % 3 == 2 else (1, 2):
                y, x = torch.randint(0, h - 10, (2,), generator=g).tolist()
                lab[y : y + 10, x : x + 10] = c
            img = torch.full((3, h, w), 90, dtype=torch.uint8)
            img[:, lab == 1] = 230
            img[:, lab == 2] = torch.tensor([150, 10, 10], dtype=torch.uint8)[:, None]
            self.items.append((img, lab))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[i]


FAST = dict(steps=6, batch_size=2, warmup=1, checkpoint_every=2)


def test_only_the_prompt_changes():
    model = tiny_model()
    model.train()  # tuning must run in eval mode and hand the model back as it got it
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = Squares(model.config.image_size)
    prompts = tune(model, data, [1, 2], config=TuneConfig(**FAST))
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), f"{k} changed during tuning"
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    # ...and the prompt did change from the real example it started from.
    start = tune(model, data, [1, 2], config=TuneConfig(**{**FAST, "steps": 1, "lr": 1e-12}))[0]
    assert not torch.equal(prompts[0].images, start.images)


def test_loss_decreases_on_a_fixed_task():
    model = tiny_model()
    data = Squares(model.config.image_size, n=1)
    cfg = TuneConfig(steps=10, batch_size=2, lr=0.2, warmup=1, flip=False, positive_fraction=1.0)
    init = tune(model, data, [1, 2], config=dataclasses.replace(cfg, steps=1, lr=1e-12))[0]
    tuned = tune(model, data, [1, 2], config=cfg)[0]
    img, lab = data[0]
    q_img, q_lab = img[None].float().repeat(2, 1, 1, 1), lab[None].repeat(2, 1, 1)
    with torch.no_grad():
        before = prompt_loss(model, init.images[None], init.masks[None], q_img, q_lab, [(1, 2)], "semantic")
        after = prompt_loss(model, tuned.images[None], tuned.masks[None], q_img, q_lab, [(1, 2)], "semantic")
    assert after < 0.99 * before, (before, after)


@pytest.mark.parametrize("foreground_weight", [1.0, 3.0])
def test_prompt_loss_is_the_training_loss(foreground_weight):
    """The tuning loss (query half decoded only) equals the model's own full-canvas training loss, with the
    tuned classes' pixels weighted as training's masking.foreground_weight weights them."""
    model = tiny_model()
    data = Squares(model.config.image_size, n=3)
    g = torch.Generator().manual_seed(3)
    p_img, p_msk = torch.randn(1, 2, 3, 32, 32, generator=g), torch.randn(1, 2, 3, 32, 32, generator=g)
    q_img = torch.stack([data[i][0] for i in range(3)]).float()
    q_lab = torch.stack([data[i][1] for i in range(3)])
    q_lab[0, :4] = 255  # ignored rows
    ours = prompt_loss(model, p_img, p_msk, q_img, q_lab, [(1, 2)], "semantic", foreground_weight=foreground_weight)
    # Reference: canvases built by hand, targets painted white (class 1) and the palette's second colour (class 2).
    colours = torch.tensor([[0, 0, 0], [255, 255, 255], [255, 255, 127]], dtype=torch.float32)  # build_palette(2)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    norm = lambda x: (x / 255 - mean) / std  # noqa: E731
    target = norm(colours[q_lab.clamp(max=2)].permute(0, 3, 1, 2))
    images, masks, valid = [], [], []
    for b in range(3):
        for p in range(2):
            images.append(torch.cat([p_img[0, p], norm(q_img[b])], 1))
            masks.append(torch.cat([p_msk[0, p], target[b]], 1))
            weight = (q_lab[b] != 255).float() * torch.where((q_lab[b] == 1) | (q_lab[b] == 2), foreground_weight, 1.0)
            valid.append(torch.cat([torch.ones(1, 32, 32), weight[None]], 1))
    _, ref = model(
        torch.stack(images),
        torch.stack(masks),
        model.query_mask(),
        torch.zeros(6, dtype=torch.long),
        feature_ensemble=True,
        num_prompts=2,
        valid=torch.stack(valid),
        return_loss=True,
    )
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6), (ours, ref)


def test_prompt_stays_a_valid_picture():
    model = tiny_model()
    prompt = tune(model, Squares(model.config.image_size), [1], config=TuneConfig(**{**FAST, "lr": 5.0}))[0]
    lo = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    hi = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    for t in (prompt.images, prompt.masks):
        assert (t >= lo.view(1, 3, 1, 1) - 1e-6).all() and (t <= hi.view(1, 3, 1, 1) + 1e-6).all()
    images, masks = prompt.to_uint8()
    assert images.shape == (1, *model.config.image_size, 3) and images.dtype == np.uint8


def test_save_load_round_trip_is_exact(tmp_path):
    model = tiny_model()
    data = Squares(model.config.image_size)
    multi = tune(model, data, [1, 2], config=TuneConfig(**{**FAST, "num_prompts": 2}))
    per_class = tune(model, data, [1, 2], config=TuneConfig(**{**FAST, "mode": "per-class"}))
    assert len(multi) == 1 and len(per_class) == 2
    assert multi[0].images.shape == (2, 3, *model.config.image_size)
    for prompts in (multi, per_class):
        path = save_prompts(prompts, tmp_path / f"p{len(prompts)}.safetensors")
        loaded = load_prompts(path)
        assert len(loaded) == len(prompts)
        for a, b in zip(prompts, loaded, strict=True):
            assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
            assert (a.task, a.classes, a.fingerprint, a.info) == (b.task, b.classes, b.fingerprint, b.info)
            assert b.model_config == model.config.to_dict()
    with pytest.raises(FileExistsError):
        save_prompts(multi, tmp_path / "p1.safetensors")
    with pytest.raises(ValueError, match="per-class"):
        LearnedPrompt.load(tmp_path / "p2.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a prompt")
    with pytest.raises(ValueError, match="learned prompt"):
        load_prompts(tmp_path / "junk.safetensors")


def test_fingerprint_tells_models_apart_but_not_dtypes():
    a, b = tiny_model(0), tiny_model(1)
    assert model_fingerprint(a) != model_fingerprint(b)
    # The same weights in bfloat16 (rounded from float32) are the same model for a prompt.
    a_bf16 = tiny_model(0).to(torch.bfloat16)
    assert model_fingerprint(a_bf16) == model_fingerprint(a)
    # One weight nudged is a different model.
    c = tiny_model(0)
    with torch.no_grad():
        c.blocks[1].mlp.fc1.weight.mul_(1.01)
    assert model_fingerprint(c) != model_fingerprint(a)


class RecordingPredictor:
    """The contract's predictor surface that learned prompts use: ``.model`` and ``set_prompt_tensors``."""

    def __init__(self, model: SegGPT) -> None:
        self.model = model
        self.calls = []

    def set_prompt_tensors(self, images, masks, task="semantic", num_labels=None, ensemble=None):
        self.calls.append((images, masks, task, num_labels, ensemble))


def test_mismatched_model_is_refused(tmp_path):
    model, other = tiny_model(0), tiny_model(1)
    prompt = tune(model, Squares(model.config.image_size), [1, 2], config=TuneConfig(**FAST))[0]
    path = prompt.save(tmp_path / "prompt.safetensors")
    with pytest.raises(PromptMismatchError) as e:
        load_prompt_into(RecordingPredictor(other), path)
    msg = str(e.value)
    assert model_fingerprint(model)[7:19] in msg and model_fingerprint(other)[7:19] in msg
    assert "seggpt tune" in msg
    with pytest.raises(PromptMismatchError):
        segment_per_class(other, [prompt], torch.zeros(1, 3, *model.config.image_size))
    # The right model takes it, with the palette size the classes need.
    pred = RecordingPredictor(model)
    loaded = load_prompt_into(pred, path)
    (images, masks, task, num_labels, ensemble) = pred.calls[0]
    assert torch.equal(images, prompt.images) and torch.equal(masks, prompt.masks)
    assert (task, num_labels, ensemble, loaded.classes) == ("semantic", 2, "none", (1, 2))


def test_real_predictor_accepts_a_learned_prompt(tmp_path):
    predictor_mod = pytest.importorskip("seggpt.predictor")
    model = tiny_model()
    prompt = tune(model, Squares(model.config.image_size), [1, 2], config=TuneConfig(**FAST))[0]
    predictor = predictor_mod.SegGPTPredictor(model)
    prompt.apply(predictor)
    target = np.full((40, 50, 3), 90, np.uint8)
    pred = predictor.predict(target)
    assert pred.labels.shape == (40, 50) and pred.labels.max() <= 2
    # The predictor's answer equals segmenting with the prompt tensors directly, at model resolution.
    q = torch.nn.functional.interpolate(
        torch.from_numpy(target).permute(2, 0, 1)[None].float(), size=model.config.image_size, mode="bicubic"
    ).clamp(0, 255)
    _, painted = segment_tensors(model, prompt.images, prompt.masks, q, 2)
    assert np.allclose(pred.raw, painted[0].permute(1, 2, 0).numpy(), atol=1e-2)


def test_learned_prompt_video(tmp_path):
    predictor_mod = pytest.importorskip("seggpt.predictor")
    from seggpt.tuning import LearnedPromptVideo

    model = tiny_model()
    data = Squares(model.config.image_size)
    # Classes 2 and 1, in that order: predicted label k must come back as classes[k - 1].
    prompt = tune(model, data, [2, 1], config=TuneConfig(**FAST))[0]
    path = prompt.save(tmp_path / "p.safetensors")
    frames = np.stack([data[i][0].permute(1, 2, 0).numpy() for i in range(3)])
    predictor = predictor_mod.SegGPTPredictor(model)
    video = LearnedPromptVideo(predictor, path)
    out = list(video.propagate(frames))
    assert [t for t, _ in out] == [0, 1, 2] and video.num_objects == 2
    assert np.array_equal(video.last_frame, frames[2])
    for t, labels in out:
        direct = predictor.predict(frames[t]).labels
        assert np.array_equal(labels, np.array([0, 2, 1])[direct])


def test_predict_per_class_merges_binary_prompts():
    predictor_mod = pytest.importorskip("seggpt.predictor")
    from seggpt.tuning import predict_per_class

    model = tiny_model()
    data = Squares(model.config.image_size)
    prompts = tune(model, data, [2, 1], config=TuneConfig(**{**FAST, "mode": "per-class"}))
    predictor = predictor_mod.SegGPTPredictor(model)
    targets = [np.full((20, 30, 3), v, np.uint8) for v in (90, 230)]
    merged = predict_per_class(predictor, prompts, targets)
    # Reference: each prompt on its own through the predictor, merged by confidence.
    singles = []
    for p in prompts:
        p.apply(predictor)
        singles.append([predictor.predict(t) for t in targets])
    for i, labels in enumerate(merged):
        score = np.stack([np.where(s[i].labels > 0, s[i].scores, -1.0) for s in singles])
        expected = np.where(score.max(0) >= 0, np.array([2, 1])[score.argmax(0)], 0)
        assert labels.shape == (20, 30) and np.array_equal(labels, expected)


def test_resume_equals_uninterrupted(tmp_path):
    model = tiny_model()
    data = Squares(model.config.image_size)
    cfg = TuneConfig(steps=6, batch_size=2, warmup=2, checkpoint_every=2, num_prompts=2)
    whole = tune(model, data, [1, 2], config=cfg)[0]

    class Stop(Exception):
        pass

    def interrupt(step, loss):
        if step == 5:  # after the step-4 checkpoint: step 5 is lost and must be redone identically
            raise Stop

    state = tmp_path / "state.pt"
    with pytest.raises(Stop):
        tune(model, data, [1, 2], config=cfg, checkpoint=state, callback=interrupt)
    assert state.is_file()
    steps = []
    (resumed,) = tune(
        model, data, [1, 2], config=cfg, checkpoint=state, resume=True, callback=lambda s, _: steps.append(s)
    )
    assert steps == [5, 6]
    assert torch.equal(resumed.images, whole.images) and torch.equal(resumed.masks, whole.masks)
    # A state from another run is refused rather than silently mixed in.
    with pytest.raises(ValueError, match="different tuning run"):
        tune(model, data, [1], config=cfg, checkpoint=state, resume=True)


def _ctrl_c_at(at: int):
    """A tune() callback that sends this process SIGINT (Ctrl-C) after step ``at``."""
    import os
    import signal

    def callback(step, loss):
        if step == at:
            os.kill(os.getpid(), signal.SIGINT)

    return callback


def test_ctrl_c_saves_the_state_at_that_step_and_resume_is_exact(tmp_path, foreground_sigint):
    import signal

    from seggpt.tuning import TuningStopped

    model = tiny_model()
    data = Squares(model.config.image_size)
    cfg = TuneConfig(steps=6, batch_size=2, warmup=2, checkpoint_every=4)
    whole = tune(model, data, [1, 2], config=cfg)[0]
    state = tmp_path / "state.pt"
    with pytest.raises(TuningStopped) as stopped:  # between checkpoints: step 3 is kept all the same
        tune(model, data, [1, 2], config=cfg, checkpoint=state, callback=_ctrl_c_at(3))
    assert stopped.value.step == 3 and stopped.value.state == state
    assert torch.load(state, weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    steps = []
    (resumed,) = tune(
        model, data, [1, 2], config=cfg, checkpoint=state, resume=True, callback=lambda s, _: steps.append(s)
    )
    assert steps == [4, 5, 6]
    assert torch.equal(resumed.images, whole.images) and torch.equal(resumed.masks, whole.masks)


def test_validation_keeps_the_best_step_and_resumes_exactly(tmp_path):
    """With a hold-out, the returned prompt is the validated one with the best score, and that score is what
    segmenting the held-out items with it gives (counted here independently); resume keeps the same choice."""
    model = tiny_model()
    data = Squares(model.config.image_size, n=10)
    cfg = TuneConfig(steps=6, batch_size=2, warmup=1, lr=2.0, val_fraction=0.3, val_every=2, checkpoint_every=2)
    (prompt,) = tune(model, data, [1, 2], config=cfg)
    info = prompt.info
    assert len(info["val_items"]) == 3 and [s for s, _ in info["val_history"]] == [0, 2, 4, 6]
    assert info["val_score"] == max(v for _, v in info["val_history"])
    assert info["best_step"] == next(s for s, v in info["val_history"] if v == info["val_score"])
    images = torch.stack([data[i][0] for i in info["val_items"]]).float()
    labels = torch.stack([data[i][1] for i in info["val_items"]])
    pred, _ = segment_tensors(model, prompt.images, prompt.masks, images, 2)
    ious = []
    for c in (1, 2):
        p, t = pred == c, labels == c
        if (p | t).any():
            ious.append(float((p & t).sum() / (p | t).sum()) * 100)
    assert info["val_score"] == pytest.approx(float(np.mean(ious)), abs=1e-4)

    class Stop(Exception):
        pass

    def interrupt(step, loss):
        if step == 5:
            raise Stop

    state = tmp_path / "state.pt"
    with pytest.raises(Stop):
        tune(model, data, [1, 2], config=cfg, checkpoint=state, callback=interrupt)
    (resumed,) = tune(model, data, [1, 2], config=cfg, checkpoint=state, resume=True)
    assert torch.equal(resumed.images, prompt.images) and resumed.info["val_history"] == info["val_history"]
    with pytest.raises(ValueError, match="val_fraction"):
        TuneConfig(val_fraction=1.0)
    with pytest.raises(ValueError, match="leaves nothing to tune on"):
        tune(model, Squares(model.config.image_size, n=1), [1], config=TuneConfig(steps=1, val_fraction=0.5))
    # The examples a prompt starts from stay training items, and it starts from them.
    start = info["val_items"][:1]
    (kept,) = tune(model, data, [1, 2], config=dataclasses.replace(cfg, steps=1, lr=1e-12), init_examples=start)
    assert start[0] not in kept.info["val_items"]
    assert torch.allclose(kept.images[0], normalize(data[start[0]][0].float()), atol=1e-6)


def test_per_class_merge_and_bad_input():
    model = tiny_model()
    data = Squares(model.config.image_size)
    prompts = tune(model, data, [1, 2], config=TuneConfig(**{**FAST, "mode": "per-class"}))
    assert [p.classes for p in prompts] == [(1,), (2,)]
    labels = segment_per_class(model, prompts, torch.stack([data[i][0] for i in range(3)]).float())
    assert labels.shape == (3, *model.config.image_size) and set(labels.unique().tolist()) <= {0, 1, 2}
    with pytest.raises(ValueError, match="appear in none"):
        tune(model, data, [7], config=TuneConfig(**FAST))
    with pytest.raises(ValueError, match="positive ids"):
        tune(model, data, [0, 1], config=TuneConfig(**FAST))
    with pytest.raises(ValueError, match="mode"):
        TuneConfig(mode="both")


def _write_folder(root, size=(40, 36), n=4):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        lab = np.zeros(size, np.uint8)
        y, x = rng.integers(0, 20, 2)
        lab[y : y + 15, x : x + 15] = 1 + i % 2
        img = np.where(lab[..., None] > 0, 220, 60).astype(np.uint8).repeat(3, 2)
        Image.fromarray(img).save(root / "images" / f"im{i}.jpg")
        Image.fromarray(lab).save(root / "masks" / f"im{i}.png")


def _answers(colours: torch.Tensor) -> torch.Tensor:
    """(N, h, w, 3) pixel values in [0, 255] -> (N, 3, h, w) answers in the model's normalised space."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (colours.permute(0, 3, 1, 2) / 255 - mean) / std


def test_soft_iou_loss_approaches_the_measured_iou():
    """With answers near palette colours and a low temperature, the loss is one minus the IoU that hard decoding
    and counting give (accumulated over the batch, averaged over the K labels); ignored pixels do not count."""
    g = torch.Generator().manual_seed(0)
    n, h, w, k = 8, 32, 30, 2
    target = torch.randint(0, k + 1, (n, h, w), generator=g)
    guess = torch.randint(0, k + 1, (n, h, w), generator=g)
    palette = torch.tensor([[0, 0, 0], [255, 255, 255], [255, 255, 127]], dtype=torch.float32)  # build_palette(2)
    colours = (palette[guess] + torch.randn(n, h, w, 3, generator=g) * 8).clamp(0, 255)
    known = torch.rand(n, h, w, generator=g) > 0.2
    ious = []
    for c in range(1, k + 1):
        p, t = (guess == c) & known, (target == c) & known
        ious.append((p & t).sum() / (p | t).sum())
    expected = 1 - torch.stack(ious).mean()
    loss = soft_iou_loss(_answers(colours), target, known, k, temperature=0.5)
    assert loss == pytest.approx(float(expected), abs=2e-3)
    # A softer decoding moves away from the hard count, and changing an ignored pixel's target changes nothing.
    right = _answers(palette[target])
    assert float(soft_iou_loss(right, target, known, k, temperature=0.5)) < 1e-3
    assert float(soft_iou_loss(right, target, known, k, temperature=40.0)) > 0.05
    flipped = target.clone()
    flipped[~known] = (flipped[~known] + 1) % (k + 1)
    assert soft_iou_loss(_answers(colours), flipped, known, k, 0.5) == soft_iou_loss(
        _answers(colours), target, known, k, 0.5
    )


def test_prompt_loss_both_is_the_sum_and_iou_tuning_learns():
    model = tiny_model()
    data = Squares(model.config.image_size, n=2)
    q_img = torch.stack([data[i][0] for i in range(2)]).float()
    q_lab = torch.stack([data[i][1] for i in range(2)])
    g = torch.Generator().manual_seed(1)
    p_img, p_msk = torch.randn(1, 1, 3, 32, 32, generator=g), torch.randn(1, 1, 3, 32, 32, generator=g)
    with torch.no_grad():
        parts = [
            prompt_loss(model, p_img, p_msk, q_img, q_lab, [(1, 2)], "semantic", loss=x) for x in ("canvas", "iou")
        ]
        both = prompt_loss(model, p_img, p_msk, q_img, q_lab, [(1, 2)], "semantic", loss="both")
    assert both == pytest.approx(float(parts[0] + parts[1]), rel=1e-5)
    assert 0 < parts[1] <= 1
    cfg = TuneConfig(steps=12, batch_size=2, lr=0.2, warmup=1, flip=False, positive_fraction=1.0, loss="iou")
    one = Squares(model.config.image_size, n=1)
    init = tune(model, one, [1, 2], config=dataclasses.replace(cfg, steps=1, lr=1e-12))[0]
    tuned = tune(model, one, [1, 2], config=cfg)[0]
    assert tuned.info["loss"] == "iou"
    img, lab = one[0]
    q_img, q_lab = img[None].float().repeat(2, 1, 1, 1), lab[None].repeat(2, 1, 1)
    with torch.no_grad():
        before = prompt_loss(model, init.images[None], init.masks[None], q_img, q_lab, [(1, 2)], "semantic", loss="iou")
        after = prompt_loss(
            model, tuned.images[None], tuned.masks[None], q_img, q_lab, [(1, 2)], "semantic", loss="iou"
        )
    assert after < before - 0.01, (before, after)
    with pytest.raises(ValueError, match="loss must be one of"):
        TuneConfig(loss="dice")


def test_folder_dataset(tmp_path):
    _write_folder(tmp_path / "d")
    data = open_folder(tmp_path / "d", (32, 32))
    img, lab = data[1]
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8 and lab.shape == (32, 32)
    assert set(lab.unique().tolist()) == {0, 2}
    (tmp_path / "d" / "images" / "extra.png").write_bytes((tmp_path / "d" / "masks" / "im0.png").read_bytes())
    with pytest.raises(ValueError, match="no mask"):
        open_folder(tmp_path / "d", (32, 32))


def test_cli_tune_end_to_end(tmp_path, capsys):
    from seggpt.cli import main

    _write_folder(tmp_path / "d")
    weights = save_native(tiny_model(), tmp_path / "tiny.safetensors")
    out = tmp_path / "prompt.safetensors"
    argv = ["tune", "--data", str(tmp_path / "d"), "--weights", str(weights), "--out", str(out)]
    argv += ["--steps", "3", "--batch-size", "2", "--no-progress"]
    assert main([*argv, "--foreground-weight", "0"]) == 2  # refused before anything is written
    assert "foreground_weight must be > 0" in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--foreground-weight", "2.5"]) == 0
    prompt = LearnedPrompt.load(out)
    assert prompt.classes == (1, 2)  # every class found in the masks
    assert prompt.info["foreground_weight"] == 2.5
    assert prompt.info["loss"] == "canvas"  # the paper's loss unless asked
    assert "best_step" not in prompt.info  # no hold-out unless asked
    assert main([*argv, "--overwrite", "--val-fraction", "0.3", "--val-every", "1"]) == 0
    assert "held-out image(s)" in capsys.readouterr().out
    assert [s for s, _ in LearnedPrompt.load(out).info["val_history"]] == [0, 1, 2, 3]
    assert main(argv) == 2  # refuses to overwrite the prompt
    assert "exists" in capsys.readouterr().err
    preview = tmp_path / "prompt.png"
    assert main(argv + ["--overwrite", "--mode", "per-class", "--classes", "2", "1", "--preview", str(preview)]) == 0
    assert [p.classes for p in load_prompts(out)] == [(2,), (1,)]
    h, w = prompt.images.shape[-2:]
    assert Image.open(preview).size == (2 * w, 2 * h)  # two per-class prompts, image | mask each


def test_cli_tune_ctrl_c_keeps_the_state_and_resumes(tmp_path, capsys, monkeypatch):
    import seggpt.tuning
    from seggpt.cli import main

    _write_folder(tmp_path / "d")
    weights = save_native(tiny_model(), tmp_path / "tiny.safetensors")
    out = tmp_path / "prompt.safetensors"
    argv = ["tune", "--data", str(tmp_path / "d"), "--weights", str(weights), "--out", str(out)]
    argv += ["--steps", "4", "--batch-size", "2", "--no-progress"]
    real = seggpt.tuning.tune
    monkeypatch.setattr(seggpt.tuning, "tune", lambda *a, **kw: real(*a, **kw, callback=_ctrl_c_at(2)))
    assert main(argv) == 130
    state = tmp_path / "prompt.safetensors.state.pt"
    assert f"stopped at step 2 with its state in {state}" in capsys.readouterr().out
    assert state.is_file() and not out.exists()
    monkeypatch.setattr(seggpt.tuning, "tune", real)
    assert main([*argv, "--resume"]) == 0
    assert out.is_file() and not state.exists()


def test_segment_cli_takes_a_prompt_file(tmp_path, capsys):
    from seggpt.cli import main
    from seggpt.io import read_mask
    from seggpt.predictor import SegGPTPredictor

    model = tiny_model()
    weights = save_native(model, tmp_path / "tiny.safetensors")
    prompt = tune(model, Squares(model.config.image_size), [1, 2], config=TuneConfig(**FAST))[0]
    save_prompts([prompt], tmp_path / "prompt.safetensors")
    target = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(target)
    args = ["segment", "--prompt-file", str(tmp_path / "prompt.safetensors"), "--weights", str(weights)]
    assert main([*args, "--out", str(tmp_path / "out"), "--no-progress", str(target)]) == 0
    # The command's label map is what the library gives for the same prompt and target.
    predictor = SegGPTPredictor(weights)
    load_prompt_into(predictor, tmp_path / "prompt.safetensors")
    assert np.array_equal(read_mask(tmp_path / "out" / "t.png"), predictor.predict(target).labels)
    # Another model refuses the prompt with a clear message and writes nothing.
    other = save_native(tiny_model(seed=1), tmp_path / "other.safetensors")
    args = ["segment", "--prompt-file", str(tmp_path / "prompt.safetensors"), "--weights", str(other)]
    assert main([*args, "--out", str(tmp_path / "out2"), "--no-progress", str(target)]) == 2
    assert "was tuned for" in capsys.readouterr().err
    assert not list((tmp_path / "out2").glob("*.png"))
