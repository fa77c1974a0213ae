"""SegGPTPredictor: equivalence with transformers' colours and decoding, the cached fast path against the plain
model, batching, ensembles, every input kind and every user error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import randomize_
from seggpt.config import vit_tiny
from seggpt.modeling import SegGPT
from seggpt.predictor import (
    MIN_COLOUR_DISTANCE,
    Prediction,
    SegGPTPredictor,
    cell_bounds,
    check_threshold,
    checked_palette,
    decode_answer,
    grid_layout,
    rle_encode,
    untile,
)
from seggpt.transforms import IMAGENET_MEAN, IMAGENET_STD

H, W = vit_tiny().image_size  # one image at model resolution: 32 x 32


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_(SegGPT(vit_tiny()), std=0.1).eval()


@pytest.fixture
def predictor(model):
    return SegGPTPredictor(model)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40 + 3 * i, 50 - 2 * i, 3), dtype=np.uint8) for i in range(4)]
    masks = []
    for img in images:
        m = np.zeros(img.shape[:2], np.int64)
        m[5:20, 10:30] = 1
        m[25:35, 5:15] = 2
        masks.append(m)
    targets = [rng.integers(0, 256, (30 + 5 * i, 20 + 7 * i, 3), dtype=np.uint8) for i in range(5)]
    return images, masks, targets


def hf_processor():
    from transformers.models.seggpt.image_processing_pil_seggpt import SegGptImageProcessorPil

    return SegGptImageProcessorPil(size={"height": H, "width": W})


# Colours and decoding against transformers -----------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 7, 8, 26, 27, 64, 150])
def test_palette_equals_transformers(n):
    from transformers.models.seggpt.image_processing_pil_seggpt import build_palette as hf_palette

    np.testing.assert_array_equal(checked_palette(n), np.array(hf_palette(n), np.uint8))


@pytest.mark.parametrize("num_labels, size", [(1, (H * 2, W * 2)), (5, (17, 45)), (30, (H, W)), (60, (19, 23))])
def test_decoding_equals_transformers_post_process(num_labels, size):
    from types import SimpleNamespace

    torch.manual_seed(1)
    pred_masks = torch.randn(3, 3, 2 * H, W) * 1.5  # normalised canvases, as SegGptForImageSegmentation returns
    hf = hf_processor().post_process_semantic_segmentation(
        SimpleNamespace(pred_masks=pred_masks), target_sizes=[size] * 3, num_labels=num_labels,
        return_segmentation_scores=True,
    )  # fmt: skip
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    palette = checked_palette(num_labels)
    for canvas, ref in zip(pred_masks, hf, strict=True):
        raw = ((canvas[:, H:] * std + mean) * 255).clamp(0, 255)
        labels, dist, _ = decode_answer(raw, palette, size, upsample="nearest")
        assert torch.equal(labels, ref.segmentation)
        torch.testing.assert_close(dist**2, -ref.segmentation_scores.max(0).values, rtol=1e-4, atol=1e-2)


def test_scores_are_the_margin_between_the_two_nearest_colours():
    palette = checked_palette(1)  # black, white
    raw = torch.tensor([[0.0, 0, 0], [255, 255, 255], [127.5, 127.5, 127.5], [51, 51, 51]]).T.reshape(3, 1, 4)
    labels, dist, scores = decode_answer(raw, palette)
    assert labels.tolist() == [[0, 1, 0, 0]] or labels.tolist() == [[0, 1, 1, 0]]  # grey is a tie
    # d1, d2 for (51, 51, 51): 51 sqrt3 and 204 sqrt3 -> (204 - 51) / 255 = 0.6
    torch.testing.assert_close(scores, torch.tensor([[1.0, 1.0, 0.0, 0.6]]))
    torch.testing.assert_close(dist[0, 3], torch.tensor(51 * 3**0.5))


def test_prompt_masks_equal_transformers_processor(predictor, data):
    images, masks, _ = data
    small_images = [np.asarray(Image.fromarray(i).resize((W, H))) for i in images[:2]]
    small_masks = [m[:H, :W] for m in masks[:2]]  # already at model size: no resize on either side
    predictor.set_prompts(small_images, small_masks, num_labels=2)
    ref = hf_processor()(images=None, prompt_masks=small_masks, num_labels=2, return_tensors="pt")["prompt_masks"]
    torch.testing.assert_close(predictor.prompt_masks.float(), ref.float(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(300, 400), (97, 61), (20, 24)])
def test_prompt_masks_are_resized_as_transformers_processor_resizes_them(predictor, shape):
    """Example masks resized as PIL's nearest neighbour resizes them (the pixel under each output pixel's centre),
    as the released script and ``transformers``' processor do and as this project's training pairs are made."""
    rng = np.random.default_rng(2)
    mask = rng.integers(0, 3, shape).astype(np.uint8)  # every pixel its own label: any other sampling shows
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    predictor.set_prompts(image, mask, num_labels=2)
    ref = hf_processor()(images=None, prompt_masks=[mask], num_labels=2, return_tensors="pt")["prompt_masks"]
    torch.testing.assert_close(predictor.prompt_masks.float(), ref.float(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(300, 400), (97, 61), (20, 24)])
def test_images_are_prepared_as_transformers_processor_prepares_them(predictor, data, shape):
    """Examples and targets resized as PIL resizes them (antialiased bicubic), which the released script and
    ``transformers``' processor both do: a photograph shrunk without antialiasing is another picture to the model."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[: shape[0], : shape[1]]
    stripes = (127 + 120 * np.sin(x * 2.3 + y * 0.7))[..., None]  # fine detail that aliasing would scramble
    image = np.clip(stripes + rng.normal(0, 20, (*shape, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros(shape, np.uint8)
    mask[: shape[0] // 2] = 1
    predictor.set_prompts(image, mask)
    query, _ = predictor.prepare_target(image)
    ref = hf_processor()(images=[image], prompt_images=[image], return_tensors="pt")
    for ours, theirs in ((query, ref["pixel_values"][0]), (predictor.prompt_images[0], ref["prompt_pixel_values"][0])):
        diff = (ours.float() - theirs.float()).abs()
        # PIL rounds to bytes after each pass and works in fixed point: under half a level of 255 on average apart.
        level = 1 / 255 / 0.224  # one level of 255 in normalised units (the smallest std)
        assert diff.mean() < 0.5 * level and diff.max() < 12 * level, (diff.mean() / level, diff.max() / level)


# The cached fast path, batching and ensembles ---------------------------------------------------------------
def reference_canvases(images, masks, targets, num_labels):
    """Full canvases built independently: each example above each query, P fastest."""
    from transformers.models.seggpt.image_processing_pil_seggpt import build_palette as hf_palette

    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pal = np.array(hf_palette(num_labels), np.float32)

    def prep(a, mode):
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float()[None]
        kw = {"align_corners": False, "antialias": True} if mode == "bicubic" else {}
        t = torch.nn.functional.interpolate(t, size=(H, W), mode=mode, **kw)
        return ((t.clamp(0, 255) / 255 - mean) / std)[0]

    ex = [prep(i, "bicubic") for i in images]
    ms = [prep(pal[m], "nearest-exact") for m in masks]
    qs = [prep(t, "bicubic") for t in targets]
    img = torch.stack([torch.cat([e, q], 1) for q in qs for e in ex])
    msk = torch.stack([torch.cat([m, m], 1) for _ in qs for m in ms])
    return img, msk


@pytest.mark.parametrize("conv", [None, "stem", "branch"])
@pytest.mark.parametrize("k", [1, 3])
def test_cached_path_equals_plain_model(model, predictor, data, k, conv):
    if conv:  # a convolutional stem or branch: the cached example must still be embedded exactly as in the canvas
        torch.manual_seed(1)
        extra = {"stem_channels": (8, 16)} if conv == "stem" else {"branch_channels": (4, 8, 8)}
        model = randomize_(SegGPT(vit_tiny(**extra)), std=0.1).eval()
        predictor = SegGPTPredictor(model)
    images, masks, targets = data
    predictor.set_prompts(images[:k], masks[:k], ensemble="feature")
    queries, sizes = predictor.prepare_targets(targets)
    fast = predictor.paint(queries)
    torch.testing.assert_close(fast, predictor.paint(queries, cached=False), rtol=0, atol=1e-4)

    img, msk = reference_canvases(images[:k], masks[:k], targets, num_labels=2)
    with torch.no_grad():
        out = model(img, msk, model.query_mask(), torch.zeros(len(img), dtype=torch.long), True, num_prompts=k)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    ref = ((out[::k, :, H:] * std + mean) * 255).clamp(0, 255)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-3)
    assert sizes == [t.shape[:2] for t in targets]


@pytest.mark.parametrize("ensemble", ["feature", "spatial", "none"])
def test_batched_equals_one_by_one(predictor, data, ensemble):
    images, masks, targets = data
    predictor.set_prompts(images[:3], masks[:3], ensemble=ensemble)
    batched = predictor.predict_batch(targets, batch_size=3)
    single = [predictor.predict(t) for t in targets]
    for b, s, t in zip(batched, single, targets, strict=True):
        assert b.labels.shape == t.shape[:2] and b.labels.dtype == np.int32
        np.testing.assert_allclose(b.raw, s.raw, atol=1e-3)
        assert (b.labels == s.labels).mean() > 0.999


@pytest.mark.parametrize("ensemble", ["feature", "none"])
def test_cpu_batches_are_split_to_the_token_budget(predictor, data, ensemble, monkeypatch):
    """On a CPU a batch runs in forward passes of at most CPU_TOKENS_PER_FORWARD tokens (at least one canvas each),
    with the answers of the whole batch."""
    import seggpt.predictor as sp

    images, masks, targets = data
    predictor.set_prompts(images[:2], masks[:2], ensemble=ensemble)
    queries, _ = predictor.prepare_targets(targets)
    whole = predictor.paint(queries)
    gh, gw = predictor.config.grid_size
    sizes = []
    real = predictor.model.embed_images
    monkeypatch.setattr(predictor.model, "embed_images", lambda q: sizes.append(len(q)) or real(q))
    monkeypatch.setattr(sp, "CPU_TOKENS_PER_FORWARD", gh * gw * 2 * 2)  # two targets of two canvases each
    split = predictor.paint(queries)
    assert sizes == [2] * (len(queries) // 2) + [1] * (len(queries) % 2)
    np.testing.assert_allclose(split.numpy(), whole.numpy(), atol=1e-3)
    sizes.clear()
    monkeypatch.setattr(sp, "CPU_TOKENS_PER_FORWARD", 1)  # below one canvas: one target at a time
    predictor.paint(queries)
    assert sizes == [1] * len(queries)


def test_ensembles_agree_for_one_example_and_differ_for_several(predictor, data):
    images, masks, targets = data
    raws = {}
    for ensemble in ("feature", "spatial", "none"):
        predictor.set_prompts(images[:1], masks[:1], ensemble=ensemble)
        raws[ensemble] = predictor.paint(predictor.prepare_targets(targets[:2])[0])
    torch.testing.assert_close(raws["feature"], raws["none"], rtol=0, atol=1e-4)
    torch.testing.assert_close(raws["spatial"], raws["none"], rtol=0, atol=1e-4)
    predictor.set_prompts(images[:2], masks[:2], ensemble="none")
    q = predictor.prepare_targets(targets[:2])[0]
    avg = predictor.paint(q)
    singles = []
    for i in range(2):
        predictor.set_prompts(images[i : i + 1], masks[i : i + 1], num_labels=2)
        singles.append(predictor.paint(q))
    torch.testing.assert_close(avg, (singles[0] + singles[1]) / 2, rtol=0, atol=1e-4)  # "none" = mean answer


def test_default_ensemble(predictor, data):
    images, masks, _ = data
    predictor.set_prompts(images[:1], masks[:1])
    assert predictor.ensemble == "none"
    predictor.set_prompts(images[:2], masks[:2])
    assert predictor.ensemble == "feature"


# Spatial ensemble layout -----------------------------------------------------------------------------------
def test_grid_layout_and_cells():
    assert [grid_layout(k) for k in (1, 2, 3, 4, 5, 9, 10)] == [(1, 1), (1, 2), (2, 2), (2, 2), (2, 3), (3, 3), (3, 4)]
    assert cell_bounds(2, 32, 8) == [(0, 16), (16, 32)]
    assert cell_bounds(3, 32, 8) == [(0, 8), (8, 24), (24, 32)]  # on patch boundaries, one patch apart at most
    with pytest.raises(ValueError, match="patches"):
        cell_bounds(5, 32, 8)


def test_spatial_canvas_layout(predictor):
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
    images = [np.full((20, 24, 3), c, np.uint8) for c in colours]
    masks = [np.full((20, 24), i + 1) for i in range(3)]
    predictor.set_prompts(images, masks, ensemble="spatial")
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    canvas = ((predictor.prompt_images[0] * std + mean) * 255).round()
    mask_canvas = ((predictor.prompt_masks[0] * std + mean) * 255).round()
    assert predictor.prompt_images.shape == (1, 3, H, W)
    palette = checked_palette(3)
    # 3 examples -> 2 x 2 cells of 16 x 16, row-major, the spare cell repeats example 0.
    for (r, c), i in zip([(0, 0), (0, 1), (1, 0), (1, 1)], [0, 1, 2, 0], strict=True):
        cell = canvas[:, 16 * r : 16 * r + 16, 16 * c : 16 * c + 16]
        assert (cell == torch.tensor(colours[i], dtype=cell.dtype).view(3, 1, 1)).all(), (r, c)
        cell = mask_canvas[:, 16 * r : 16 * r + 16, 16 * c : 16 * c + 16]
        assert (cell == torch.tensor(palette[i + 1], dtype=cell.dtype).view(3, 1, 1)).all(), (r, c)
    # The query is tiled the same way: every cell is the whole target at cell size.
    target = np.arange(30 * 30 * 3, dtype=np.int64).reshape(30, 30, 3) % 256
    q = predictor.prepare_targets([target.astype(np.uint8)])[0][0]
    for r in range(2):
        for c in range(2):
            torch.testing.assert_close(q[:, 16 * r : 16 * r + 16, 16 * c : 16 * c + 16], q[:, :16, :16])


def test_untile_averages_the_cells():
    answer = torch.zeros(1, 3, H, W)
    for j, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        answer[:, :, 16 * r : 16 * r + 16, 16 * c : 16 * c + 16] = 40.0 * j
    out = untile(answer, (2, 2), 8)
    torch.testing.assert_close(out, torch.full_like(out, 60.0))


# Every input kind ------------------------------------------------------------------------------------------
def test_target_kinds_give_the_same_answer(tmp_path, predictor, data):
    images, masks, targets = data
    predictor.set_prompts(images[:2], masks[:2])
    t = targets[1]
    Image.fromarray(t).save(tmp_path / "t.png")
    ref = predictor.predict(t)
    for src in (
        Image.fromarray(t),
        tmp_path / "t.png",
        str(tmp_path / "t.png"),
        np.dstack([t, np.full(t.shape[:2], 9)]),
    ):
        np.testing.assert_array_equal(
            predictor.predict(src.astype(np.uint8) if isinstance(src, np.ndarray) else src).labels, ref.labels
        )
    grey = t[..., 0]
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    g8 = predictor.predict(grey)
    np.testing.assert_array_equal(predictor.predict(tmp_path / "g16.png").labels, g8.labels)
    np.testing.assert_array_equal(predictor.predict(np.repeat(grey[..., None], 3, 2)).labels, g8.labels)


def test_mask_kinds_paint_the_same_prompt(tmp_path, predictor, data):
    from transformers.models.seggpt.image_processing_pil_seggpt import build_palette as hf_palette

    images, masks, _ = data
    img, lab = images[0], masks[0]
    predictor.set_prompts([img], [lab])
    ref = predictor.prompt_masks.clone()
    Image.fromarray(lab.astype(np.uint8)).save(tmp_path / "lab.png")
    pal = Image.fromarray(lab.astype(np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [0] * 759)
    pal.save(tmp_path / "pal.png")
    colour = np.array(hf_palette(2), np.uint8)[lab]
    other_colours = np.array([[0, 0, 0], [250, 250, 0], [10, 10, 10]], np.uint8)[lab]  # decreasing RGB order
    for m in (tmp_path / "lab.png", tmp_path / "pal.png", Image.open(tmp_path / "lab.png"), colour, other_colours):
        predictor.set_prompts([img], [m])
        torch.testing.assert_close(predictor.prompt_masks, ref, rtol=0, atol=0, msg=str(m))
    binary = (lab > 0).astype(np.uint8) * 255
    predictor.set_prompts([Image.fromarray(img).convert("RGBA")], [Image.fromarray(binary)])
    assert len(predictor.palette) == 2  # binary: one label, white on black


def test_single_prompt_not_in_a_list(predictor, data):
    images, masks, targets = data
    predictor.set_prompts(images[0], masks[0])
    assert predictor.num_prompts == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_just_works(data, dtype):
    images, masks, targets = data
    torch.manual_seed(0)
    m = randomize_(SegGPT(vit_tiny()), std=0.1).eval()
    ref = SegGPTPredictor(m)
    ref.set_prompts(images[:2], masks[:2])
    want = ref.predict(targets[0])
    p = SegGPTPredictor(m, dtype=dtype)
    p.set_prompts(images[:2], masks[:2])
    got = p.predict(targets[0])
    assert got.raw.dtype == np.float32 and np.isfinite(got.raw).all()
    assert got.labels.shape == targets[0].shape[:2]
    assert np.abs(got.raw - want.raw).mean() < 8  # half precision, same painting


# Results ---------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2
def test_prediction_fields_and_helpers(tmp_path, predictor, data):
    import json

    from pycocotools import mask as coco_mask

    images, masks, targets = data
    predictor.set_prompts(images[:2], masks[:2])
    p = predictor.predict(targets[2])
    assert isinstance(p, Prediction)
    assert p.labels.shape == p.scores.shape == targets[2].shape[:2] and p.raw.shape == (H, W, 3)
    assert p.scores.dtype == np.float32 and p.scores.min() >= 0 and p.scores.max() <= 1
    np.testing.assert_array_equal(p.color, checked_palette(2)[p.labels])
    p.save_labels(tmp_path / "l.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "l.png")), p.labels)
    with pytest.raises(FileExistsError):
        p.save_labels(tmp_path / "l.png")
    p.save_color(tmp_path / "c.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "c.png")), p.color)
    p.save_overlay(tmp_path / "o.jpg", targets[2])
    assert Image.open(tmp_path / "o.jpg").size == (targets[2].shape[1], targets[2].shape[0])
    p.save_rle(tmp_path / "r.json")
    anns = json.loads((tmp_path / "r.json").read_text())
    assert [a["label"] for a in anns] == [k for k in np.unique(p.labels).tolist() if k]
    for a in anns:
        decoded = coco_mask.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
        np.testing.assert_array_equal(decoded, p.labels == a["label"])
        assert a["area"] == int(coco_mask.area(coco_mask.encode(np.asfortranarray(decoded))))


def test_rle_equals_pycocotools():
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(0)
    cases = [np.zeros((5, 7), bool), np.ones((5, 7), bool), rng.random((40, 33)) > 0.5, rng.random((64, 64)) > 0.97]
    blob = np.zeros((300, 200), bool)
    blob[20:250, 30:180] = True  # long runs: multi-group counts and negative differences
    cases.append(blob)
    for m in cases:
        want = coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode()
        assert rle_encode(m) == want


# Errors that say what to do --------------------------------------------------------------------------------
def test_count_mismatch(predictor, data):
    images, masks, _ = data
    with pytest.raises(ValueError, match=r"2 prompt image\(s\) but 1 mask"):
        predictor.set_prompts(images[:2], masks[:1])
    with pytest.raises(ValueError, match="at least one"):
        predictor.set_prompts([], [])


def test_mask_size_mismatch_names_both_sizes(predictor, data):
    images, masks, _ = data
    with pytest.raises(ValueError, match=r"48x43.*50x40") as e:
        predictor.set_prompts([images[0]], [masks[1]])
    assert "prompt 0" in str(e.value)


def test_unreadable_prompt_and_target_name_the_file(tmp_path, predictor, data):
    images, masks, _ = data
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    with pytest.raises(ValueError, match="broken.png"):
        predictor.set_prompts([tmp_path / "broken.png"], [masks[0]])
    predictor.set_prompts(images[:1], masks[:1])
    with pytest.raises(ValueError, match="broken.png"):
        predictor.predict(tmp_path / "broken.png")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        predictor.predict_batch([images[0], tmp_path / "missing.jpg"])


def test_empty_mask_warns(predictor, data):
    images, masks, _ = data
    with pytest.warns(UserWarning, match="prompt 1.*empty"):
        predictor.set_prompts(images[:2], [masks[0], np.zeros_like(masks[1])])


def test_too_many_labels(predictor, data):
    images, _, _ = data
    sep = 256 // (int(2000 ** (1 / 3)) + 1)
    assert sep < MIN_COLOUR_DISTANCE
    lab = np.zeros(images[0].shape[:2], np.int64)
    lab[0, 0] = 2000
    with pytest.raises(ValueError, match=r"2000 labels.*at most 1728 labels"):
        predictor.set_prompts([images[0]], [lab])
    with pytest.raises(ValueError, match="num_labels"):
        predictor.set_prompts([images[0]], [lab.clip(0, 5)], num_labels=3)
    checked_palette(1728)  # the largest palette whose colours are >= 20 apart


def test_misuse(model, data):
    images, masks, targets = data
    p = SegGPTPredictor(model)
    with pytest.raises(RuntimeError, match="set_prompts"):
        p.predict(targets[0])
    with pytest.raises(ValueError, match="task"):
        p.set_prompts(images[:1], masks[:1], task="panoptic")
    with pytest.raises(ValueError, match="ensemble"):
        p.set_prompts(images[:1], masks[:1], ensemble="mean")
    with pytest.raises(ValueError, match="prompt tensors"):
        p.set_prompt_tensors(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))


def test_set_prompt_tensors_equals_set_prompts(predictor, data):
    images, masks, targets = data
    predictor.set_prompts(images[:2], masks[:2], task="instance")
    want = predictor.predict(targets[0])
    imgs, msks = predictor.prompt_images.clone(), predictor.prompt_masks.clone()
    predictor.set_prompt_tensors(imgs, msks, task="instance", num_labels=2)
    got = predictor.predict(targets[0])
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_allclose(got.raw, want.raw, atol=1e-5)


def test_prompt_work_is_done_once(model, data):
    images, masks, targets = data
    p = SegGPTPredictor(model)
    p.set_prompts(images[:3], masks[:3])
    seen = []
    hook = model.patch_embed.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    try:
        p.predict_batch(targets, batch_size=5)
    finally:
        hook.remove()
    assert seen == [(5, 3, H, W)]  # only the 5 query halves are embedded; the 3 examples were embedded once


def test_image_size_when_loading(tmp_path):
    from seggpt.checkpoint import save_native

    model = randomize_(SegGPT(vit_tiny())).eval()
    path = save_native(model, tmp_path / "tiny.safetensors")
    p = SegGPTPredictor(path, image_size=48)
    assert p.config.image_size == (48, 48)
    p.set_prompts([np.zeros((20, 30, 3), np.uint8)], [np.ones((20, 30), np.uint8)])
    assert p.predict(np.zeros((25, 17, 3), np.uint8)).labels.shape == (25, 17)  # answers at the target's size
    with pytest.raises(ValueError, match="image_size applies when the predictor loads"):
        SegGPTPredictor(model, image_size=48)


# Any target size, in bands (issue #27) ---------------------------------------------------------------------
def _smooth_answer(palette: np.ndarray, h: int, w: int, seed: int) -> torch.Tensor:
    """A painted answer like the model's: regions of palette colours, blurred at their edges, plus noise."""
    g = torch.Generator().manual_seed(seed)
    regions = torch.randint(0, len(palette), (1, 1, 6, 6), generator=g).float()
    regions = torch.nn.functional.interpolate(regions, size=(h, w), mode="nearest")[0, 0].long()
    raw = torch.as_tensor(palette, dtype=torch.float32)[regions].permute(2, 0, 1)
    raw = torch.nn.functional.avg_pool2d(raw[None], 5, 1, 2, count_include_pad=False)[0]
    return (raw + 12 * torch.randn(raw.shape, generator=g)).clamp(0, 255)


@pytest.mark.parametrize("num_labels", [1, 3, 40])
@pytest.mark.parametrize("upsample", ["bilinear", "nearest"])
def test_label_decoder_bands_equal_decode_answer(num_labels, upsample):
    from seggpt.predictor import LabelDecoder, decode_rows, resize_rows, row_bands

    palette = checked_palette(num_labels)
    for seed, (answer, size) in enumerate([((32, 32), (300, 200)), ((32, 16), (45, 170)), ((24, 24), (24, 24))]):
        raw = _smooth_answer(palette, *answer, seed)
        labels, _, scores = decode_answer(raw, palette, size, upsample)
        assert labels.shape == size
        # Any band alone equals that band of the whole; the cheap label decoder equals the full decoding.
        bands = row_bands(*size, pixels=3000)
        assert len(bands) > 1 or size == (24, 24)
        decoder = LabelDecoder(raw, palette, size, upsample)
        assert torch.equal(torch.cat([decoder(b) for b in bands]), labels)
        assert torch.equal(torch.cat([decode_rows(raw, palette, size, b, upsample)[2] for b in bands]), scores)
        whole = resize_rows(raw, size, (0, size[0]), upsample)
        assert torch.equal(torch.cat([resize_rows(raw, size, b, upsample) for b in bands], 1), whole)
        if upsample == "nearest":  # as transformers' post-processing resizes
            ref = torch.nn.functional.interpolate(raw[None], size=size, mode="nearest")[0]
            assert torch.equal(whole, ref)
        else:  # torch's bilinear, up to float rounding
            ref = torch.nn.functional.interpolate(raw[None], size=size, mode="bilinear", align_corners=False)[0]
            assert (whole - ref).abs().max() < 1e-2


def test_save_answer_writes_what_predict_gives(tmp_path, predictor, data):
    images, masks, targets = data
    predictor.set_prompts(images[:2], masks[:2])
    path = tmp_path / "t.png"
    Image.fromarray(targets[3]).save(path)
    expected = predictor.predict(path)
    q, size = predictor.prepare_target(path)
    raw = predictor.paint(q[None])[0]
    predictor.save_answer(raw, size, tmp_path / "l.png", tmp_path / "c.png", tmp_path / "o.png", image=path)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "l.png")), expected.labels)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "c.png")), expected.color)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), expected.overlay(path))
    # A target above the overlay's pixel budget gets a preview reduced by a whole factor; labels keep the size.
    predictor.save_answer(raw, size, tmp_path / "l2.png", None, tmp_path / "o2.png", image=path, overlay_max_pixels=300)
    h, w = size
    assert Image.open(tmp_path / "o2.png").size == (-(-w // 3), -(-h // 3))  # 3 x 3 blocks: <= 300 pixels
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "l2.png")), expected.labels)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# Decoding threshold --------------------------------------------------------------------------------------------
def test_threshold_checked():
    for bad in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
            check_threshold(bad)
        with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
            decode_answer(torch.zeros(3, 2, 2), checked_palette(1), threshold=bad)


@pytest.mark.parametrize("threshold", [0.2, 0.3, 0.45, 0.6])
def test_threshold_is_the_fraction_from_background_to_the_label(threshold):
    # A binary task (white on black): a uniform grey g takes the label exactly when g / 255 is past the threshold.
    pal = checked_palette(1)
    grey = torch.tensor([0.1, 0.25, 0.35, 0.5, 0.55, 0.9]) * 255
    raw = grey[None, None, :].expand(3, 2, -1).clone()
    labels, _, scores = decode_answer(raw, pal, threshold=threshold)
    np.testing.assert_array_equal(labels[0].numpy(), (grey / 255 > threshold).long().numpy())
    # The score is 0 on the border and grows away from it on either side.
    line = torch.linspace(0, 255, 256)
    _, _, sc = decode_answer(line[None, None, :].expand(3, 1, -1).clone(), pal, threshold=threshold)
    at = int(round(threshold * 255))
    assert sc[0, at].item() < 0.01
    assert (sc[0, :at].diff() <= 1e-6).all() and (sc[0, at:].diff() >= -1e-6).all()
    assert sc[0, -1].item() == pytest.approx(1.0)  # the label's own colour


def test_threshold_half_is_the_nearest_colour():
    rng = np.random.default_rng(0)
    raw = torch.as_tensor(rng.uniform(0, 255, (3, 20, 30)), dtype=torch.float32)
    for k in (1, 5, 40):  # the running and the chunked nearest-colour paths
        pal = checked_palette(k)
        plain = decode_answer(raw, pal, (33, 47))
        same = decode_answer(raw, pal, (33, 47), threshold=0.5)
        moved = decode_answer(raw, pal, (33, 47), threshold=0.5 + 1e-7)
        for a, b, c in zip(plain, same, moved, strict=True):
            assert torch.equal(a, b)
            torch.testing.assert_close(a.float(), c.float(), atol=1e-3, rtol=0)


def test_threshold_with_several_labels_against_a_reference():
    # Written out pixel by pixel: the nearest label colour p (background left out), kept where the pixel lies at
    # least t of the way from the background p0 to p, along p - p0.
    rng = np.random.default_rng(1)
    raw = torch.as_tensor(rng.uniform(0, 255, (3, 12, 16)) * rng.uniform(0, 1, (1, 12, 16)), dtype=torch.float32)
    for k, t in ((4, 0.3), (4, 0.7), (40, 0.25)):
        pal = checked_palette(k)
        got, _, _ = decode_answer(raw, pal, threshold=t)
        p0, cols = pal[0].astype(float), pal[1:].astype(float)
        for y, x in np.ndindex(12, 16):
            v = raw[:, y, x].double().numpy()
            d = ((cols - v) ** 2).sum(1)
            j = int(d.argmin())
            if np.sort(d)[1] - d[j] < 1e-3:
                continue  # a tie between two labels: either is right
            frac = (v - p0) @ (cols[j] - p0) / ((cols[j] - p0) @ (cols[j] - p0))
            if abs(frac - t) < 1e-4:
                continue
            assert got[y, x].item() == (j + 1 if frac > t else 0), (k, t, y, x)
    # A colour painted dimly (40% of the way from the background) takes its label at 0.3 and not at 0.5.
    pal = checked_palette(1)
    dim = torch.full((3, 1, 1), 0.4 * 255)
    assert decode_answer(dim, pal)[0].item() == 0 and decode_answer(dim, pal, threshold=0.3)[0].item() == 1


@pytest.mark.parametrize("labels", [1, 3])
def test_threshold_in_predict_and_save_answer(tmp_path, model, data, labels):
    images, masks, targets = data
    masks = [np.where(m > 0, (m + np.arange(m.shape[1]) // 12) % labels + 1, 0) for m in masks]
    path = tmp_path / "t.png"
    Image.fromarray(targets[3]).save(path)
    near = SegGPTPredictor(model)
    low = SegGPTPredictor(model, threshold=0.2)
    assert near.threshold == 0.5 and low.threshold == 0.2  # a given model decodes by the nearest colour
    for p in (near, low):
        p.set_prompts(images[:2], masks[:2])
    a, b = near.predict(path), low.predict(path)
    np.testing.assert_array_equal(a.raw, b.raw)  # the painting is the same; only its reading differs
    assert (b.labels > 0).sum() > (a.labels > 0).sum()
    np.testing.assert_array_equal(b.color, low.palette[b.labels])  # colours stay the palette's own
    # The band-by-band writer (LabelDecoder) reads the answer as predict does.
    q, size = low.prepare_target(path)
    raw = low.paint(q[None])[0]
    low.save_answer(raw, size, tmp_path / "l.png", None, None)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "l.png")), b.labels)
    with pytest.raises(ValueError, match="threshold must be in"):
        SegGPTPredictor(model, threshold=1.0)
