"""Video propagation: ids, context bookkeeping, re-prompting. The logic is tested with a stand-in predictor that
segments flat-coloured synthetic videos exactly (so every expected label map is known without a model); the
real model (random ``vit_tiny``) checks the prompts that reach the network."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import randomize_
from seggpt import SegGPT, vit_tiny
from seggpt.coloring import build_palette, decode
from seggpt.transforms import denormalize
from seggpt.video import SegGPTVideoPredictor, as_label_map, merge_annotation

SIZE = 32  # frames at the stand-in's model resolution: no resizing, so colours stay exact
BACKGROUND = (40, 40, 40)
A, B, C = (220, 30, 30), (30, 200, 40), (40, 60, 230)  # object colours
ID_A, ID_B, ID_C = 2, 5, 9  # sparse ids: they must come back exactly through the palette


class ColourKeyPredictor:
    """Stands in for ``SegGPTPredictor``: from the examples it is given it learns which mask colour each image
    colour carries (majority over all example pixels) and paints the target with that; unknown colours are
    background. The answer is decoded with ``build_palette(num_labels)``, as the real predictor does."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(image_size=(SIZE, SIZE))
        self.prompt_counts: list[int] = []
        self.num_labels: list[int | None] = []

    @staticmethod
    def _keys(rgb: np.ndarray) -> np.ndarray:
        rgb = rgb.astype(np.int64)
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]

    def set_prompt_tensors(self, images, masks, task="semantic", num_labels=None, ensemble=None):
        self.prompt_counts.append(len(images))
        self.num_labels.append(num_labels)
        img = denormalize(images).round().permute(0, 2, 3, 1).numpy()
        msk = denormalize(masks).round().permute(0, 2, 3, 1).numpy()
        pairs = (self._keys(img).reshape(-1) << 24) | self._keys(msk).reshape(-1)
        values, counts = np.unique(pairs, return_counts=True)
        self.table: dict[int, int] = {}
        best: dict[int, int] = {}
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            key, colour = v >> 24, v & 0xFFFFFF
            if c > best.get(key, 0):
                best[key], self.table[key] = c, colour
        self.palette = build_palette(num_labels or 1)

    def predict(self, target):
        keys = self._keys(np.asarray(target))
        uniq, inverse = np.unique(keys, return_inverse=True)
        colour = np.array([self.table.get(int(k), 0) for k in uniq])[inverse].reshape(keys.shape)
        rgb = np.stack([(colour >> 16) & 255, (colour >> 8) & 255, colour & 255], -1)
        labels, _ = decode(torch.from_numpy(rgb).float(), torch.from_numpy(self.palette))
        return SimpleNamespace(labels=labels.numpy().astype(np.int32))


def square(t_x: int, y: int, side: int = 8) -> tuple[slice, slice]:
    return slice(y, y + side), slice(t_x, t_x + side)


def synthetic_video(num_frames: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A moves right; B leaves the frame on frames 3..7 and comes back at 8; C enters at frame 5.

    Returns frames (T, 32, 32, 3) uint8 and the true label maps (T, 32, 32)."""
    frames = np.empty((num_frames, SIZE, SIZE, 3), np.uint8)
    labels = np.zeros((num_frames, SIZE, SIZE), np.int64)
    frames[:] = BACKGROUND
    for t in range(num_frames):
        for colour, obj_id, box, visible in (
            (A, ID_A, square(2 + t, 2), True),
            (B, ID_B, square(20, 20 - (t % 3)), not 3 <= t <= 7),
            (C, ID_C, square(18, 4), t >= 5),
        ):
            if visible:
                frames[t][box] = colour
                labels[t][box] = obj_id
    return frames, labels


def run(vp: SegGPTVideoPredictor, frames, first, annotations=None, on_frame=None) -> np.ndarray:
    out = []
    for t, lab in vp.propagate(frames, first, annotations=annotations):
        assert t == len(out)
        out.append(lab)
        if on_frame is not None:
            on_frame(t, vp)
    return np.stack(out)


def test_objects_keep_their_ids_and_a_reappearing_object_is_found_again():
    frames, gt = synthetic_video()
    gt_without_c = np.where(gt == ID_C, 0, gt)  # C is never annotated here
    vp = SegGPTVideoPredictor(predictor=ColourKeyPredictor(), context=2)
    recent_ids_at_8 = []

    def check(t, vp):
        if t == 7:  # the context that segments frame 8, where B comes back
            recent_ids_at_8.extend(int(i) for c in vp.context_frames if not c.annotated for i in c.labels.unique())

    pred = run(vp, frames, gt[0], on_frame=check)
    np.testing.assert_array_equal(pred, gt_without_c)
    # B was in none of the recent frames: only the always-kept annotated frame can have brought it back.
    assert ID_B not in recent_ids_at_8
    assert (pred[8] == ID_B).sum() == 64


def test_context_is_annotated_frames_plus_the_last_k_and_never_grows():
    frames, gt = synthetic_video()
    long_video = np.concatenate([frames] * 2)  # 24 frames: many times K
    stand_in = ColourKeyPredictor()
    k = 3
    vp = SegGPTVideoPredictor(predictor=stand_in, context=k)
    seen = []
    run(vp, long_video, gt[0], on_frame=lambda t, vp: seen.append([c.index for c in vp.context_frames]))
    for t, indices in enumerate(seen):
        assert indices == [0] + list(range(max(1, t - k + 1), t + 1))
    assert max(stand_in.prompt_counts) == 1 + k
    assert len(stand_in.prompt_counts) == len(long_video) - 1  # frame 0 is the annotation: no prediction


def test_context_zero_keeps_only_the_annotated_frames():
    frames, gt = synthetic_video(6)
    stand_in = ColourKeyPredictor()
    vp = SegGPTVideoPredictor(predictor=stand_in, context=0)
    run(vp, frames, gt[0])
    assert stand_in.prompt_counts == [1] * 5


def test_later_annotation_adds_a_new_object_from_its_frame_on():
    frames, gt = synthetic_video()
    c_box = gt[5] == ID_C
    stand_in = ColourKeyPredictor()
    vp = SegGPTVideoPredictor(predictor=stand_in, context=2)
    pred = run(vp, frames, gt[0], annotations={5: np.where(c_box, ID_C, 0)})
    np.testing.assert_array_equal(pred, gt)
    # Ids 2, 5, 9 are painted with a palette of 3 colours (compact, not 9), the same for the whole video since
    # every annotation was known at the start.
    assert stand_in.num_labels == [3] * (len(frames) - 1)
    assert vp.object_ids == [ID_A, ID_B, ID_C]
    assert not (pred[:5] == ID_C).any()
    assert [c.index for c in vp.context_frames if c.annotated] == [0, 5]
    # Control: without the annotation C is never labelled.
    again = run(SegGPTVideoPredictor(predictor=ColourKeyPredictor(), context=2), frames, gt[0])
    assert not (again == ID_C).any()


def test_new_object_added_while_propagating_grows_the_palette_consistently():
    frames, gt = synthetic_video()
    stand_in = ColourKeyPredictor()
    vp = SegGPTVideoPredictor(predictor=stand_in, context=2)

    def annotate(t, vp):
        if t == 2:
            vp.add_annotation(5, np.where(gt[5] == ID_C, ID_C, 0))

    pred = run(vp, frames, gt[0], on_frame=annotate)
    np.testing.assert_array_equal(pred, gt)
    # Two colours for frames 1 and 2, three once C's annotation is known (after frame 2); every example is
    # repainted with the larger palette, so A and B still decode to their ids.
    assert stand_in.num_labels == [2] * 2 + [3] * 9


def test_correction_added_while_propagating_replaces_that_frames_prediction():
    frames, gt = synthetic_video()
    correction = np.zeros((SIZE, SIZE), np.int64)
    correction[0:4, 0:6] = ID_A  # the user says A is here on frame 6 (and nowhere else)
    vp = SegGPTVideoPredictor(predictor=ColourKeyPredictor(), context=2)
    errors = []

    def annotate(t, vp):
        if t == 3:
            vp.add_annotation(6, correction)
            with pytest.raises(ValueError, match="already segmented"):
                vp.add_annotation(2, correction)
            errors.append("checked")

    pred = run(vp, frames, gt[0], on_frame=annotate)
    assert errors == ["checked"]
    predicted6 = np.where(gt[6] == ID_C, 0, gt[6])  # C is never annotated: the stand-in cannot know it
    expected6 = np.where(correction > 0, correction, np.where(predicted6 == ID_A, 0, predicted6))
    np.testing.assert_array_equal(pred[6], expected6)
    assert (pred[6] == ID_C).sum() == 0  # C unannotated: background; B (off screen) absent; A only as drawn
    np.testing.assert_array_equal(pred[5], np.where(gt[5] == ID_C, 0, gt[5]))  # frames before are untouched
    assert 6 in [c.index for c in vp.context_frames if c.annotated]


def test_start_redoes_only_the_frames_from_a_later_annotation():
    frames, gt = synthetic_video()
    correction = np.zeros((SIZE, SIZE), np.int64)
    correction[0:4, 0:6] = ID_A
    stand_in = ColourKeyPredictor()
    vp = SegGPTVideoPredictor(predictor=stand_in, context=2)
    out = list(vp.propagate(frames, gt[0], annotations={6: correction}, start=6))
    assert [t for t, _ in out] == list(range(6, len(frames)))
    predicted6 = np.where(gt[6] == ID_C, 0, gt[6])
    np.testing.assert_array_equal(
        out[0][1], np.where(correction > 0, correction, np.where(predicted6 == ID_A, 0, predicted6))
    )
    assert stand_in.prompt_counts[0] == 1  # frame 6 is segmented from the annotated frame 0 alone
    assert [c.index for c in vp.context_frames if c.annotated] == [0, 6]
    with pytest.raises(ValueError, match="start"):
        vp.propagate(frames, gt[0], start=-1)


def test_replace_mode_takes_the_annotation_as_the_whole_frame():
    frames, gt = synthetic_video()
    only_c = np.where(gt[6] == ID_C, ID_C, 0)
    vp = SegGPTVideoPredictor(predictor=ColourKeyPredictor(), context=2, annotation_mode="replace")
    pred = run(vp, frames, gt[0], annotations={6: only_c})
    np.testing.assert_array_equal(pred[6], only_c)
    assert [c.index for c in vp.context_frames if c.annotated] == [0, 6]
    assert (pred[7] == ID_A).sum() == 64  # A, absent from frame 6, still follows from frames 0 and 5


def test_merge_annotation():
    pred = np.array([[1, 1, 2, 0]])
    ann = np.array([[0, 3, 0, 1]])
    np.testing.assert_array_equal(merge_annotation(pred, ann), [[0, 3, 2, 1]])


def test_frames_before_the_first_annotation_are_background():
    frames, gt = synthetic_video(8)
    vp = SegGPTVideoPredictor(predictor=ColourKeyPredictor(), context=2)
    pred = run(vp, frames, None, annotations={3: gt[3]})
    assert not pred[:3].any()
    np.testing.assert_array_equal(pred[3:], np.where(gt[3:] == ID_A, ID_A, 0))  # only A is on frame 3


def test_label_map_forms():
    a = np.zeros((4, 5), bool)
    a[1, 1] = True
    b = np.zeros((4, 5), bool)
    b[2, 3] = True
    np.testing.assert_array_equal(as_label_map({4: a, 7: b}), a * 4 + b * 7)
    np.testing.assert_array_equal(as_label_map(np.stack([a, b])), a * 1 + b * 2)
    np.testing.assert_array_equal(as_label_map(a), a.astype(int))
    with pytest.raises(ValueError, match="0..255"):
        as_label_map(np.full((2, 2), 300))


@pytest.mark.parametrize("size, warned", [((32, 48), True), ((48, 32), False), ((32, 32), False)])
def test_portrait_frames_at_a_landscape_size_are_named(size, warned, caplog):
    frames, labels = synthetic_video(3)
    frames = np.stack([np.resize(f, (48, 32, 3)) for f in frames])  # portrait: 32 wide, 48 high
    first = np.zeros((48, 32), np.int64)
    first[4:12, 4:12] = 1
    vp = SegGPTVideoPredictor(predictor=ColourKeyPredictor(), image_size=size)
    with caplog.at_level("WARNING", logger="seggpt.video"):
        run(vp, frames, first)
    turned = [r.getMessage() for r in caplog.records if "squeezed" in r.getMessage()]
    if warned:
        h, w = size
        assert turned == [
            f"the frames are 32 wide and 48 high but the model segments them {w} wide and {h} high, squeezed to the "
            f"other shape; --image-size {w}x{h} (height x width; image_size=({w}, {h})) keeps theirs"
        ]
    else:
        assert not turned


def test_a_loaded_model_turns_its_video_size_to_each_videos_orientation(weights, monkeypatch, caplog):
    """Built from a source, the video predictor runs the embedded model at its video size turned to the frames'
    orientation, per video, keeping the threshold; with image_size given it keeps that size and warns."""
    import seggpt.checkpoint as ck

    monkeypatch.setattr(ck, "EMBEDDED_WEIGHTS", weights)
    monkeypatch.setattr(ck, "EMBEDDED_VIDEO_IMAGE_SIZE", (32, 64))
    portrait = np.random.default_rng(0).integers(0, 256, (3, 48, 32, 3), dtype=np.uint8)
    landscape = portrait.transpose(0, 2, 1, 3).copy()
    first = np.zeros((48, 32), np.int64)
    first[4:20, 4:12] = 1
    vp = SegGPTVideoPredictor(device="cpu")
    vp.predictor.threshold = 0.55
    with caplog.at_level("WARNING", logger="seggpt.video"):
        labels = run(vp, portrait, first)
        assert (vp.image_size, vp.predictor.config.image_size) == ((64, 32), (64, 32))
        assert vp.predictor.threshold == 0.55 and labels[-1].shape == (48, 32)
        run(vp, landscape, first.T.copy())
        assert (vp.image_size, vp.predictor.config.image_size) == ((32, 64), (32, 64))
        assert not [r for r in caplog.records if "squeezed" in r.getMessage()]
        fixed = SegGPTVideoPredictor(device="cpu", image_size=(32, 64))
        run(fixed, portrait, first)
    assert fixed.image_size == (32, 64)
    assert len([r for r in caplog.records if "squeezed" in r.getMessage()]) == 1


def test_a_loaded_model_runs_at_the_size_and_threshold_given(weights, monkeypatch):
    """image_size and threshold reach the model a video predictor loads (a side or height x width); a predictor
    passed in keeps its own threshold."""
    import seggpt.checkpoint as ck

    monkeypatch.setattr(ck, "EMBEDDED_WEIGHTS", weights)
    monkeypatch.setattr(ck, "EMBEDDED_VIDEO_IMAGE_SIZE", (32, 64))
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 80, 3), dtype=np.uint8)
    first = np.zeros((40, 80), np.int64)
    first[4:20, 4:30] = 1
    for size, expected in (((16, 48), (16, 48)), (32, (32, 32))):
        vp = SegGPTVideoPredictor(device="cpu", image_size=size, threshold=0.65)
        assert (vp.image_size, vp.predictor.config.image_size, vp.threshold) == (expected, expected, 0.65)
        assert run(vp, frames, first)[-1].shape == (40, 80)
        assert vp.image_size == expected  # a given size is not turned
    vp.threshold = 0.4
    assert vp.predictor.threshold == 0.4
    with pytest.raises(ValueError, match="threshold"):
        vp.threshold = 1.5
    with pytest.raises(ValueError, match="task must be 'instance' or 'semantic'"):
        vp.task = "panoptic"
    with pytest.raises(ValueError, match="task must be 'instance' or 'semantic'"):
        SegGPTVideoPredictor(model="no/such/checkpoint", task="panoptic")  # before anything loads
    with pytest.raises(ValueError, match="give the predictor you pass its own threshold"):
        SegGPTVideoPredictor(predictor=ColourKeyPredictor(), threshold=0.6)


def test_bad_input_errors():
    frames, gt = synthetic_video(4)
    vp = SegGPTVideoPredictor(predictor=ColourKeyPredictor(), context=2)
    with pytest.raises(ValueError, match="no object"):
        vp.propagate(frames, np.zeros((SIZE, SIZE), int))
    with pytest.raises(ValueError, match="nothing to propagate"):
        vp.propagate(frames, None)
    with pytest.raises(ValueError, match="frames are 32x32"):
        next(vp.propagate(frames, gt[0][:20]))
    mixed = [frames[0], frames[1], np.zeros((16, 16, 3), np.uint8)]
    gen = vp.propagate(mixed, gt[0])
    next(gen), next(gen)
    with pytest.raises(ValueError, match="one size"):
        next(gen)
    with pytest.raises(ValueError, match="context"):
        SegGPTVideoPredictor(predictor=ColourKeyPredictor(), context=-1)


# The real network ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_real_model_sees_annotated_plus_k_prompts(dtype):
    model = SegGPT(vit_tiny()).eval()
    batches = []
    # The encoder's input holds both streams of every canvas: 2 x (number of examples) for one query.
    embed = model.embed
    model.embed = lambda *args: batches.append(2 * args[0].shape[0]) or embed(*args)
    vp = SegGPTVideoPredictor(model=model, context=2, dtype=dtype)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 40, 48, 3), dtype=np.uint8)  # not the model's size: resized both ways
    first = np.zeros((40, 48), np.int64)
    first[4:14, 4:20] = 1
    first[20:36, 24:44] = 3
    out = list(vp.propagate(frames, first))
    assert [t for t, _ in out] == list(range(6))
    np.testing.assert_array_equal(out[0][1], first)
    for _, lab in out[1:]:
        assert lab.shape == (40, 48)
        assert set(np.unique(lab)) <= {0, 1, 2, 3}
    assert batches == [2 * 1, 2 * 2, 2 * 3, 2 * 3, 2 * 3]  # frame t: 1 annotated + min(t - 1, K) recent
    assert vp.predictor.model.blocks[0].attn.qkv.weight.dtype == dtype


def test_matches_the_image_predictor_given_the_same_examples():
    """Frame t of the video equals what SegGPTPredictor answers when handed frame 0 and the earlier frames with
    their masks as raw images (its own reading, resizing and painting path)."""
    from seggpt.predictor import SegGPTPredictor

    model = randomize_(SegGPT(vit_tiny()).eval(), std=0.3)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (4, 40, 48, 3), dtype=np.uint8)
    first = np.zeros((40, 48), np.int64)
    first[4:20, 4:24] = 1
    first[22:38, 20:46] = 2
    out = [lab for _, lab in SegGPTVideoPredictor(model=model, context=2).propagate(frames, first)]
    image_predictor = SegGPTPredictor(model)
    masks = [first]
    for t in range(1, 4):
        examples = [0, *range(max(1, t - 2), t)]  # the annotated frame and the last K = 2
        image_predictor.set_prompts(
            [frames[i] for i in examples], [masks[i] for i in examples], task="instance", num_labels=2
        )
        expected = image_predictor.predict(frames[t]).labels
        np.testing.assert_array_equal(out[t], expected)
        masks.append(expected)
    assert len(np.unique(np.stack(out[1:]))) > 1  # the answers are not trivially constant
