"""Image inference: show SegGPT examples once, then segment any number of targets.

    >>> from seggpt.predictor import SegGPTPredictor
    >>> p = SegGPTPredictor()                                  # the embedded model, or a checkpoint path
    >>> p.set_prompts(["cat1.jpg", "cat2.jpg"], ["cat1.png", "cat2.png"])
    >>> pred = p.predict("new_cat.jpg")
    >>> pred.save_labels("new_cat_mask.png")

Everything that does not depend on the target is done once in :meth:`SegGPTPredictor.set_prompts`: reading,
resizing, normalising and painting the examples, and the patch embedding of their half of the canvas (patches do
not overlap, so the embedding of the upper half alone is exactly the upper half of the canvas's token grid). Per
target only the query half is embedded, then the encoder and the query half of the decoder run.

Design choices (each is a documented parameter or constant):

- Colours. Label maps are painted with the ``transformers``-compatible palette (:func:`seggpt.coloring.
  build_palette`); a binary task is a palette of one label, white on black. The answer is decoded by the nearest
  palette colour, with the background's share set by ``threshold``: a pixel takes its nearest label colour when
  it is at least that fraction of the way from the background colour to it (0.5, the default of every checkpoint
  but the embedded model, is the nearest colour exactly; :func:`check_threshold`).
- Size. The painted answer (model resolution) is resized *as colours* to the target's size, bilinearly by
  default, then decoded: edges follow the colour gradient instead of the model's pixel grid. ``upsample="nearest"``
  reproduces ``transformers``' ``post_process_semantic_segmentation`` exactly. (With three or more labels a
  bilinear transition between two colours can pass near a third; nearest never invents such pixels.) Large
  targets cost what the model reads, not their size: files are decoded at reduced scale for the model
  (:func:`seggpt.io.read_image_reduced`), and :meth:`SegGPTPredictor.save_answer` decodes and writes the answer a
  band of rows at a time (:class:`LabelDecoder`); the label map always has the target's size.
- Scores. ``(d2 - d1) / (d2 + d1)`` with d1, d2 the distances to the nearest and second-nearest palette colour:
  1 when the pixel is exactly a palette colour, 0 halfway between two. Unlike ``1 - d1 / max``, it does not depend
  on how dense the palette is, and a grey pixel in a binary task (equally far from black and white) scores 0.
- Ensembles over several examples. ``feature`` (default for two or more): the released model's context ensemble,
  query features averaged over the examples after every attention. ``spatial`` (the paper's): the examples are
  tiled into one grid (``grid_layout``: ceil(sqrt K) columns, as many rows as needed, spare cells cycling through
  the examples again; cells follow patch boundaries), the query tiled the same way below, and the answer is the
  mean of the query cells, each resized back to full size. ``none``: every example answers on its own and the
  painted answers are averaged (no interaction inside the network); with one example all three are the same.
- Test-time views (``scales``, ``flip``; off by default). Each target is also painted at other sizes (relative to
  the model's, on the same weights: only the token grid changes) and mirrored left to right; the painted answers
  are brought to the largest view's size (bilinear; a mirrored answer mirrored back) and averaged as colours before
  they are read. Each view costs a forward pass of its size: ``scales=(1, 1.5)`` about 4 times the time of one.
  With the embedded model on CamVid one-shot it finds more bicyclists, pedestrians and cars, which are small at the
  model's own size (docs/embedded-model.md, "Test-time views").
- Shape. Every image is squeezed into the model's square, as the released code does. With ``keep_aspect`` each
  target is read at its own shape on as many patches (:func:`aspect_size`), the examples resized to it, by a twin
  predictor per shape on the same modules; not the default, as it did not pay for the embedded model
  (docs/embedded-model.md, "Images read at their shape").
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import logging
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from seggpt.coloring import build_palette, paint
from seggpt.io import (
    ImageSource,
    PngWriter,
    atomic_file,
    atomic_write,
    colours_to_labels,
    describe,
    label_png_mode,
    load_mask_array,
    open_image_resized,
    read_image,
    read_image_reduced,
    save_image,
    save_label_png,
    save_rgb,
)
from seggpt.modeling import INSTANCE, SEMANTIC, SegGPT
from seggpt.modeling.seggpt import correspondence_prior
from seggpt.overlay import OVERLAY_ALPHA, contour_width, draw_overlay, overlay_colours
from seggpt.transforms import denormalize, normalize, query_half, resize_image, resize_mask, stack_canvas, to_chw

log = logging.getLogger(__name__)

TASKS = {"semantic": SEMANTIC, "instance": INSTANCE}
ENSEMBLES = ("feature", "spatial", "none")
UPSAMPLING = ("bilinear", "nearest")
# Palette colours closer than this (L2 in [0, 255] RGB) are not reliably told apart in the model's painting;
# the transformers palette keeps them >= 20 apart up to 1728 labels.
MIN_COLOUR_DISTANCE = 20.0
# Overlays written by SegGPTPredictor.save_answer are previews: up to this many pixels they have the target's size,
# beyond it they are reduced by a whole factor (a 12000 x 12000 target: 6000 x 6000), so that the target need not
# be decoded whole. The label map always has the target's size.
OVERLAY_MAX_PIXELS = 40_000_000
# On a CPU, canvases run at most this many tokens per forward pass (a batch is split to fit; at least one canvas).
# Past it the activations outgrow the caches and every canvas gets slower: the embedded model at 256 px (512 tokens
# a canvas) painted 84-92 ms a target 8 canvases at a time against 69-75 ms 4 at a time, on this project's 2-core
# CPU; at 192 px (288 tokens) 8 at a time is the fast case. GPUs take the whole batch.
CPU_TOKENS_PER_FORWARD = 2304
# Images whose embeddings the predictor keeps, by content (SegGPTPredictor._embedded): the image tokens and the
# correspondence prior's descriptors of its latest examples, and of its targets with keep_targets. In video the
# examples of a frame are the annotated frames and the frames segmented just before, so each frame's image encoder
# runs once instead of once per frame it prompts (DAVIS blackswan, 2 recent frames: 1.6 against 1.1-1.3 frames/s).
# Keeping none (0) embeds every image every time.
EMBED_CACHE = 16
# Images keep their shape (SegGPTPredictor's keep_aspect): the longer side may be at most this many times the shorter
# (a panorama is squeezed to it), and a predictor keeps the examples embedded at this many shapes at once.
MAX_ASPECT = 4.0
SHAPES_KEPT = 8


# Results ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # arrays have no single truth value: compare fields explicitly
class Prediction:
    """The answer for one target.

    Attributes:
        labels: (H, W) int32 at the target's original size; 0 = background.
        color: (H, W, 3) uint8, the palette colour of each label.
        scores: (H, W) float32 in [0, 1]: (d2 - d1) / (d2 + d1) for the distances d1, d2 to the nearest and the
            second-nearest palette colour, the background's moved by the threshold (:func:`check_threshold`):
            1 = exactly a palette colour, 0 = on the border between two labels.
        raw: (h, w, 3) float32 in [0, 255], the model's painted answer at model resolution.
        palette: (K + 1, 3) uint8, the colours of labels 0..K.
    """

    labels: np.ndarray
    color: np.ndarray
    scores: np.ndarray
    raw: np.ndarray
    palette: np.ndarray = field(default_factory=lambda: build_palette(1), repr=False)

    def save_labels(self, path: str | os.PathLike, overwrite: bool = False) -> os.PathLike:
        """Indexed PNG of the label map (pixel values are labels; the palette shows them in colour)."""
        return save_label_png(self.labels, path, self.palette, overwrite=overwrite)

    def save_color(self, path: str | os.PathLike, overwrite: bool = False) -> os.PathLike:
        """RGB image of the decoded colours."""
        return save_rgb(self.color, path, overwrite=overwrite)

    def overlay(self, image: ImageSource, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
        """The target with each region filled at ``alpha`` and outlined in a saturated overlay colour
        (:func:`seggpt.overlay.draw_overlay`; not the model's palette, whose label 1 is white): (H, W, 3) uint8."""
        img = read_image(image)
        if img.shape[:2] != self.labels.shape:
            raise ValueError(
                f"overlay: the image is {img.shape[1]}x{img.shape[0]} but the prediction is "
                f"{self.labels.shape[1]}x{self.labels.shape[0]}; pass the target this prediction belongs to"
            )
        return draw_overlay(img, self.labels, alpha, overlay_colours(len(self.palette) - 1))

    def save_overlay(
        self, path: str | os.PathLike, image: ImageSource, alpha: float = OVERLAY_ALPHA, overwrite: bool = False
    ) -> os.PathLike:
        """Save :meth:`overlay` (JPEG or PNG by suffix)."""
        return save_rgb(self.overlay(image, alpha), path, overwrite=overwrite)

    def to_coco_rle(self) -> list[dict]:
        """One COCO annotation-like dict per label present (background excluded), in label order:
        ``{"label", "segmentation": {"size": [H, W], "counts": str}, "area", "bbox": [x, y, w, h], "score"}``.
        ``counts`` is the compressed RLE string ``pycocotools.mask.decode`` reads; ``score`` the mean of
        :attr:`scores` over the region."""
        out = []
        for k in np.unique(self.labels):
            if k == 0:
                continue
            m = self.labels == k
            ys, xs = np.nonzero(m)
            x0, y0 = int(xs.min()), int(ys.min())
            out.append(
                {
                    "label": int(k),
                    "segmentation": {"size": list(m.shape), "counts": rle_encode(m)},
                    "area": int(m.sum()),
                    "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
                    "score": float(self.scores[m].mean()),
                }
            )
        return out

    def save_rle(self, path: str | os.PathLike, overwrite: bool = False) -> os.PathLike:
        """Write :meth:`to_coco_rle` as JSON."""
        text = json.dumps(self.to_coco_rle())
        return atomic_write(path, lambda tmp: open(tmp, "w").write(text), overwrite)  # noqa: SIM115


def rle_encode(mask: np.ndarray) -> str:
    """COCO compressed RLE of a binary (H, W) mask: column-major run lengths, first run of zeros, each count
    written as 5-bit groups (+48) with a continuation bit and stored as the difference to the count two back."""
    flat = np.asarray(mask, dtype=bool).reshape(-1, order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    chars = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            b = x & 0x1F
            x >>= 5  # arithmetic shift: negative differences end at -1
            more = x != -1 if b & 0x10 else x != 0
            if more:
                b |= 0x20
            chars.append(chr(b + 48))
    return "".join(chars)


# Decoding --------------------------------------------------------------------------------------------------
def decode_answer(
    raw: Tensor,
    palette: np.ndarray | Tensor,
    size: tuple[int, int] | None = None,
    upsample: str = "bilinear",
    threshold: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """Painted answer -> labels, distance and score at ``size``.

    Args:
        raw: (3, h, w) painted colours in [0, 255] (any float dtype; decoding runs in float32).
        palette: (K, 3) colours.
        size: output (H, W); None keeps (h, w).
        upsample: "bilinear" resizes the colours smoothly; "nearest" as ``transformers`` does.
        threshold: the fraction of the way from the background colour to a label's that takes the label
            (:func:`check_threshold`; 0.5: the nearest colour).

    Returns:
        labels (H, W) long, nearest-colour distance d1 (H, W) in [0, 441.7] (the background's read moved by the
        threshold, :func:`check_threshold`, so above 441.7 is possible below 0.5), scores (H, W) in [0, 1].
    """
    size = tuple(raw.shape[-2:]) if size is None else tuple(size)
    parts = [decode_rows(raw, palette, size, rows, upsample, threshold) for rows in row_bands(*size)]
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]


def check_threshold(threshold: float) -> float:
    """The decoding threshold, checked: a float in (0, 1).

    Decoding with threshold t gives a pixel x its nearest label colour p (the background p0 left out) when x lies
    at least t of the way from p0 to p: ``<x - p0, p - p0> >= t |p - p0|^2``; otherwise the background. At 0.5
    that is exactly the nearest palette colour (the released rule). In distances: the label wins when
    ``|x - p|^2 < |x - p0|^2 + (1 - 2t) |p - p0|^2``, so the background's squared distance is read moved by
    ``(1 - 2t) |p - p0|^2`` (:func:`_two_nearest_thresholded`).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}; 0.5 reads by the nearest colour")
    return float(threshold)


def row_bands(height: int, width: int, pixels: int = 1 << 21) -> list[tuple[int, int]]:
    """Row ranges [y0, y1) of about ``pixels`` pixels each that cover an image of ``height`` x ``width``."""
    step = max(1, pixels // max(width, 1))
    return [(y, min(height, y + step)) for y in range(0, height, step)]


def resize_rows(c: Tensor, size: tuple[int, int], rows: tuple[int, int], upsample: str = "bilinear") -> Tensor:
    """Rows ``rows`` = [y0, y1) of the (3, h, w) colours resized to ``size`` = (H, W): (3, y1 - y0, W).

    Widths are resized by ``F.interpolate``, heights by indexing (nearest, as torch picks rows) or by blending the
    two source rows with torch's ``align_corners=False`` weights (bilinear), so any band of rows is computed
    alone, and bands computed one by one give the same values as one call for the whole image.
    """
    h = c.shape[-2]
    height, width = size
    y = torch.arange(rows[0], rows[1], dtype=torch.float32, device=c.device)
    scale = torch.tensor(h / height, dtype=torch.float32)
    if upsample == "nearest":
        wide = F.interpolate(c[None], size=(h, width), mode="nearest")[0]
        return wide[:, (y * scale).floor().long().clamp(max=h - 1)]
    wide = F.interpolate(c[None], size=(h, width), mode="bilinear", align_corners=False)[0]
    real = ((y + 0.5) * scale - 0.5).clamp(min=0)
    i0 = real.long().clamp(max=h - 1)
    i1 = (i0 + 1).clamp(max=h - 1)
    l1 = (real - i0).clamp(0, 1)[None, :, None]
    return wide[:, i0] * (1 - l1) + wide[:, i1] * l1


def decode_rows(
    raw: Tensor,
    palette: np.ndarray | Tensor,
    size: tuple[int, int],
    rows: tuple[int, int],
    upsample: str = "bilinear",
    threshold: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`decode_answer` for the rows [y0, y1) of the output only: labels, d1, scores (y1 - y0, W).

    What lets a very large target be decoded and written a band at a time, in memory that does not grow with it.
    """
    if upsample not in UPSAMPLING:
        raise ValueError(f"unknown upsample {upsample!r}; use one of {UPSAMPLING}")
    c = raw.float()
    c = c if tuple(size) == tuple(c.shape[-2:]) and rows == (0, size[0]) else resize_rows(c, size, rows, upsample)
    h, w = c.shape[-2:]
    pal = torch.as_tensor(np.asarray(palette), dtype=torch.float32, device=c.device)
    if len(pal) < 2:
        raise ValueError("decoding needs a palette of at least two colours (background and one label)")
    labels, d1, d2 = _nearest_labels(c.reshape(3, -1), pal, threshold)
    d1, d2 = d1.sqrt(), d2.sqrt()
    scores = torch.where(d1 + d2 > 0, (d2 - d1) / (d2 + d1).clamp_min(1e-12), torch.ones_like(d1))
    return labels.reshape(h, w), d1.reshape(h, w), scores.reshape(h, w)


# Small palettes: one pass per colour over channel-first pixels, keeping the two smallest distances (a few
# element-wise ops per colour; no (N, K) matrix, no sort). Larger ones: (N, K) distances in bounded chunks.
_RUNNING_MIN_COLOURS = 32


def _two_nearest_running(pix: Tensor, pal: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """pix (3, N), pal (K, 3) -> label of the nearest colour (first on ties, as argmin), d1^2, d2^2 (N,)."""
    r, g, b = pix
    d1 = torch.full_like(r, float("inf"))
    d2 = torch.full_like(r, float("inf"))
    labels = torch.zeros(r.shape, dtype=torch.long, device=r.device)
    for k, (pr, pg, pb) in enumerate(pal.tolist()):
        # Summed in the order transformers sums (c - p)^2 over the channels, so distances match it exactly.
        dk = (r - pr).square_().add_((g - pg).square_()).add_((b - pb).square_())
        closer = dk < d1
        d2 = torch.where(closer, d1, torch.minimum(d2, dk))
        d1 = torch.where(closer, dk, d1)
        labels.masked_fill_(closer, k)
    return labels, d1, d2


def _two_nearest_chunked(pix: Tensor, pal: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """As :func:`_two_nearest_running` through (N, K) distance matrices of ~4 M values at a time."""
    pix = pix.T
    n = pix.shape[0]
    labels = torch.empty(n, dtype=torch.long, device=pix.device)
    d1, d2 = torch.empty(n, device=pix.device), torch.empty(n, device=pix.device)
    step = max(1, (1 << 22) // (3 * len(pal)))
    for s in range(0, n, step):
        dist = ((pix[s : s + step, None, :] - pal[None]) ** 2).sum(-1)  # N K
        labels[s : s + step] = dist.argmin(-1)
        two = dist.topk(2, dim=-1, largest=False).values
        d1[s : s + step], d2[s : s + step] = two[:, 0], two[:, 1]
    return labels, d1, d2


def _two_nearest(pix: Tensor, pal: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """pix (3, N) -> label, d1^2, d2^2 (N,), by the path suited to the palette's size."""
    return (_two_nearest_running if len(pal) <= _RUNNING_MIN_COLOURS else _two_nearest_chunked)(pix, pal)


def _two_nearest_thresholded(pix: Tensor, pal: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """As :func:`_two_nearest` with the background's squared distance moved by ``(1 - 2t) |p - p0|^2``, p the
    nearest label colour (:func:`check_threshold`); ties go to the background, as argmin gives them."""
    p0 = pal[0][:, None]
    near, e1, e2 = _two_nearest(pix, pal[1:])
    span = (pal[1:] - pal[0]).square().sum(-1)[near]  # |p - p0|^2 of each pixel's nearest label
    d0 = ((pix - p0).square().sum(0) + (1.0 - 2.0 * threshold) * span).clamp_min(0)
    label = e1 < d0
    return (
        torch.where(label, near + 1, torch.zeros_like(near)),
        torch.minimum(e1, d0),
        torch.where(label, torch.minimum(e2, d0), e1),
    )


def _nearest_labels(pix: Tensor, pal: Tensor, threshold: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """Label, d1^2, d2^2 (N,) by the nearest colour (threshold 0.5: exactly the released rule) or the threshold."""
    if threshold == 0.5:
        return _two_nearest(pix, pal)
    return _two_nearest_thresholded(pix, pal, check_threshold(threshold))


class LabelDecoder:
    """The labels :func:`decode_answer` gives, for any band of rows of any output size, at a fraction of its cost.

    The answer is painted at model resolution (h, w) and resized to the target's (H, W), so each output pixel
    is a blend (a convex combination) of neighbouring model pixels. Nearest-colour cells are convex, and each
    margin ``|x - p_j|^2 - |x - p_k|^2`` is affine in the colour x: where a model pixel and its eight neighbours
    all decode to one label with a margin to the second-nearest colour above :data:`_MARGIN` (float rounding is
    far smaller), every blend of them decodes to that label too. Only the pixels near a change of label are
    decoded one by one, with exactly :func:`resize_rows`' arithmetic; a 12000 x 12000 target costs seconds.
    (With ``upsample="nearest"`` every output pixel is a model pixel, and all are looked up.) With a threshold
    other than 0.5 and two or more labels the background's region need not be convex (its offset depends on the
    nearest label), so every pixel is decoded one by one.

    Args:
        raw: (3, h, w) painted answer in [0, 255].
        palette: (K, 3) colours.
        size: the output (H, W).
        upsample: "bilinear" or "nearest", as :func:`decode_answer`.
        threshold: as :func:`decode_answer`.
    """

    # Squared RGB distance margin (colours in [0, 255]): blends lose at most a few units of it to rounding.
    _MARGIN = 16.0

    def __init__(
        self,
        raw: Tensor,
        palette: np.ndarray | Tensor,
        size: tuple[int, int],
        upsample: str = "bilinear",
        threshold: float = 0.5,
    ):
        if upsample not in UPSAMPLING:
            raise ValueError(f"unknown upsample {upsample!r}; use one of {UPSAMPLING}")
        self.c = raw.float()
        self.size = (int(size[0]), int(size[1]))
        self.upsample = upsample
        self.pal = torch.as_tensor(np.asarray(palette), dtype=torch.float32, device=self.c.device)
        if len(self.pal) < 2:
            raise ValueError("decoding needs a palette of at least two colours (background and one label)")
        h, w = self.c.shape[-2:]
        self.threshold = threshold
        labels, d1, d2 = _nearest_labels(self.c.reshape(3, -1), self.pal, threshold)
        self.source = labels.reshape(h, w)
        x = torch.arange(self.size[1], dtype=torch.float32, device=self.c.device)
        scale = torch.tensor(w / self.size[1], dtype=torch.float32)
        if upsample == "nearest":
            self.cols = (x * scale).floor().long().clamp(max=w - 1)
            return
        self.cols = ((x + 0.5) * scale - 0.5).clamp(min=0).long().clamp(max=w - 1)
        sure = (d2 - d1 > self._MARGIN).reshape(1, 1, h, w).float()
        lab = self.source.reshape(1, 1, h, w).float()
        pad = (1, 1, 1, 1)
        hi = F.max_pool2d(F.pad(lab, pad, mode="replicate"), 3, stride=1)
        lo = -F.max_pool2d(F.pad(-lab, pad, mode="replicate"), 3, stride=1)
        sure = -F.max_pool2d(F.pad(-sure, pad, mode="replicate"), 3, stride=1)
        self.uniform = ((hi == lo) & (sure > 0))[0, 0]  # (h, w): every blend around this pixel has its label
        if threshold != 0.5 and len(self.pal) > 2:
            self.uniform.zero_()
        self.wide = F.interpolate(self.c[None], size=(h, self.size[1]), mode="bilinear", align_corners=False)[0]

    def __call__(self, rows: tuple[int, int]) -> Tensor:
        """Labels (y1 - y0, W) long of the output rows [y0, y1)."""
        h = self.c.shape[-2]
        y = torch.arange(rows[0], rows[1], dtype=torch.float32, device=self.c.device)
        scale = torch.tensor(h / self.size[0], dtype=torch.float32)
        if self.upsample == "nearest":
            return self.source[(y * scale).floor().long().clamp(max=h - 1)][:, self.cols]
        real = ((y + 0.5) * scale - 0.5).clamp(min=0)
        i0 = real.long().clamp(max=h - 1)
        # Output rows with the same source row share their looked-up labels: gather each source row once.
        rows_used, which = torch.unique_consecutive(i0, return_inverse=True)
        labels = self.source[rows_used][:, self.cols][which]
        ys, xs = torch.nonzero(~self.uniform[rows_used][:, self.cols][which], as_tuple=True)
        if len(ys):  # near a change of label: blend the colours as resize_rows does, and decode them
            i1 = (i0 + 1).clamp(max=h - 1)
            l1 = (real - i0).clamp(0, 1)
            a, b, t = self.wide[:, i0[ys], xs], self.wide[:, i1[ys], xs], l1[ys][None]
            labels[ys, xs] = _nearest_labels(a * (1 - t) + b * t, self.pal, self.threshold)[0]
        return labels


def checked_palette(num_labels: int) -> np.ndarray:
    """``build_palette(num_labels)``, refusing palettes whose colours the model cannot keep apart."""
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1 (1 = a binary mask), got {num_labels}")
    base = int(num_labels ** (1 / 3)) + 1
    separation = 256 // base if num_labels > 1 else 255 * math.sqrt(3)  # the grid step, or white vs black
    if separation < MIN_COLOUR_DISTANCE:
        limit = num_labels
        while 256 // (int(limit ** (1 / 3)) + 1) < MIN_COLOUR_DISTANCE:
            limit -= 1
        raise ValueError(
            f"{num_labels} labels need palette colours only {separation} apart (RGB distance); the model cannot "
            f"paint colours closer than {MIN_COLOUR_DISTANCE:g} reliably, so at most {limit} labels work at once. "
            "Segment the classes in several runs, or renumber sparse label ids to 1..K."
        )
    return build_palette(num_labels)


# Spatial ensemble ------------------------------------------------------------------------------------------
def grid_layout(k: int) -> tuple[int, int]:
    """(rows, cols) of the spatial-ensemble grid for k examples: ceil(sqrt k) columns, enough rows."""
    cols = math.ceil(math.sqrt(k))
    return math.ceil(k / cols), cols


def cell_bounds(n: int, length: int, patch: int) -> list[tuple[int, int]]:
    """Split ``length`` pixels (a multiple of ``patch``) into n cells on patch boundaries: [(start, end), ...].
    Cells differ by at most one patch, so no patch straddles two examples."""
    tokens = length // patch
    if n > tokens:
        raise ValueError(f"a spatial grid of {n} cells needs at least {n} patches per side; the image has {tokens}")
    cuts = [round(i * tokens / n) * patch for i in range(n + 1)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def tile(sources: Sequence[Tensor], size: tuple[int, int], grid: tuple[int, int], patch: int, mode: str) -> Tensor:
    """Tile images into a grid canvas: cell j (row-major) holds ``sources[j % len(sources)]`` resized to the cell.

    Args:
        sources: (3, H_i, W_i) tensors.
        size: (h, w) of the canvas half.
        grid: (rows, cols).
        mode: "image" (bicubic, clamped to [0, 255]), "normalised" (bicubic, unclamped; both antialiased) or "mask"
            (nearest).

    Returns:
        (3, h, w).
    """
    rows, cols = cell_bounds(grid[0], size[0], patch), cell_bounds(grid[1], size[1], patch)
    out = sources[0].new_zeros(3, *size, dtype=torch.float32)
    j = 0
    for r0, r1 in rows:
        for c0, c1 in cols:
            src, cell = sources[j % len(sources)].float(), (r1 - r0, c1 - c0)
            if mode == "image":
                out[:, r0:r1, c0:c1] = resize_image(src, cell)
            elif mode == "normalised":
                out[:, r0:r1, c0:c1] = resize_image(src, cell, clamp=False)
            else:
                out[:, r0:r1, c0:c1] = resize_mask(src, cell)
            j += 1
    return out


def untile(answer: Tensor, grid: tuple[int, int], patch: int) -> Tensor:
    """Mean of the grid cells of an answer, each resized (bilinear) to the whole: (B, 3, h, w) -> (B, 3, h, w)."""
    h, w = answer.shape[-2:]
    cells = []
    for r0, r1 in cell_bounds(grid[0], h, patch):
        for c0, c1 in cell_bounds(grid[1], w, patch):
            cell = answer[..., r0:r1, c0:c1]
            cells.append(F.interpolate(cell, size=(h, w), mode="bilinear", align_corners=False))
    return torch.stack(cells).mean(0)


def check_scales(scales: Sequence[float] | None) -> tuple[float, ...]:
    """The test-time scales, checked: a non-empty sequence of distinct positive numbers holding 1 (the model's own
    size, which every other view is averaged with); None is ``(1.0,)``."""
    if scales is None:
        return (1.0,)
    try:
        out = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise ValueError(f"scales must be numbers, like (1, 1.5); got {scales!r}") from None
    if not out or any(not math.isfinite(s) or s <= 0 for s in out):
        raise ValueError(f"scales must be positive numbers, like (1, 1.5); got {scales!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"scales must not repeat; got {scales!r}")
    if 1.0 not in out:
        raise ValueError(f"scales must hold 1 (the model's own size), like (1, 1.5); got {scales!r}")
    return out


def scaled_size(size: tuple[int, int], scale: float, patch: int) -> tuple[int, int]:
    """``size`` (h, w) times ``scale``, each side rounded to the nearest multiple of ``patch`` (at least one)."""
    return tuple(max(patch, round(v * scale / patch) * patch) for v in size)  # type: ignore[return-value]


def aspect_size(height: int, width: int, size: tuple[int, int], patch: int) -> tuple[int, int]:
    """The input size (h, w) for an image of ``height`` x ``width`` read at its own shape: multiples of ``patch``,
    at most as many patches as ``size`` holds, with the ratio of width to height nearest the image's (held between
    1 / :data:`MAX_ASPECT` and :data:`MAX_ASPECT`); of two as near, the one with more patches.

    On 256 x 256's patches (16 px): a 4:3 photograph 224 x 288, a square 256 x 256, 16:9 192 x 336.
    """
    budget = (size[0] // patch) * (size[1] // patch)
    ratio = min(max(width / height, 1 / MAX_ASPECT), MAX_ASPECT)
    gh = min(range(1, budget + 1), key=lambda g: (abs(math.log((budget // g) / g / ratio)), -g * (budget // g)))
    return gh * patch, (budget // gh) * patch


def model_at_size(model: SegGPT, size: tuple[int, int]) -> SegGPT:
    """``model`` for images of another size (h, w): a shallow copy that shares every submodule and weight, under a
    config of that size (attention resizes the relative position tables it holds to the grid it meets)."""
    twin = copy.copy(model)
    twin.config = model.config.replace(img_size=(2 * size[0], size[1]))
    return twin


# The predictor ---------------------------------------------------------------------------------------------
def _as_list(x) -> list:
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


class SegGPTPredictor:
    """Set examples once with :meth:`set_prompts`, then :meth:`predict` / :meth:`predict_batch` many targets.

    Args:
        model: None (the embedded model), a :class:`SegGPT`, or a checkpoint path or Hugging Face hub id (any
            source :func:`seggpt.load_model` reads).
        device: where the model runs: "auto" (cuda, then mps, then cpu), "cpu", "cuda:1", ...
        dtype: parameter and activation precision (a torch dtype, or "fp32", "bf16", "fp16"), or "int8" (CPU
            only; int8 linear layers, see :func:`seggpt.checkpoint.to_precision`; a given model is quantised in
            place). None keeps a given model's dtype (float32 for a loaded one). Decoding always runs in float32.
        upsample: how the painted answer is brought to the target's size, "bilinear" or "nearest" (see the module
            docstring).
        image_size: the side (or (H, W)) each image is resized to for the model, when loading one: None is the
            checkpoint's own (the embedded model's :data:`seggpt.checkpoint.EMBEDDED_IMAGE_SIZE`); see
            :func:`seggpt.load_model`. A given :class:`SegGPT` runs at its own size.
        video: when loading one, the model is for video (the embedded model then runs at
            :data:`seggpt.checkpoint.EMBEDDED_VIDEO_IMAGE_SIZE`; see :func:`seggpt.load_model`).
        threshold: a pixel takes a label when its painted colour is at least this fraction of the way from the
            background colour to the label's (:func:`check_threshold`). None: the model's own
            (:func:`seggpt.checkpoint.default_threshold`: for the embedded model
            :data:`seggpt.checkpoint.EMBEDDED_THRESHOLD`, or :data:`seggpt.checkpoint.EMBEDDED_VIDEO_THRESHOLD`
            with ``video``; 0.5, the nearest colour as the released code decodes, for any other checkpoint and for
            a given :class:`SegGPT`).
        scales: test-time views at other sizes, relative to the model's image size (it must hold 1), like
            ``(1, 1.5)``: each target is painted at each size (each side rounded to the patch size) and the
            answers averaged (the module docstring). None: the model's size alone. Examples must be given as images
            (:meth:`set_prompts`), and the spatial ensemble tiles the query itself: neither goes with other scales.
        flip: also paint each target mirrored left to right (at every scale) and average the answers.
        keep_aspect: read each target at its own shape, on as many patches as the model's image size holds
            (:func:`aspect_size`: a 4:3 photograph at 224 x 288 instead of 256 x 256), the examples resized to
            that shape with it; targets of each shape run together. Off by default: every image is read square,
            as the released code reads it (for the embedded model it gained on CamVid's development targets and
            lost on its validation part; docs/embedded-model.md). Examples given as tensors
            (:meth:`set_prompt_tensors`) are made at the model's size, and targets are then read at it.

    ``video_context`` is the number of recent frames :class:`seggpt.video.SegGPTVideoPredictor` keeps with this
    predictor when none is asked for (:func:`seggpt.checkpoint.default_video_context`: 2 for the embedded model,
    the paper's 8 for other checkpoints and for a given :class:`SegGPT`).
    """

    def __init__(
        self,
        model: SegGPT | str | os.PathLike | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        upsample: str = "bilinear",
        image_size: int | tuple[int, int] | None = None,
        video: bool = False,
        threshold: float | None = None,
        scales: Sequence[float] | None = None,
        flip: bool = False,
        keep_aspect: bool = False,
    ) -> None:
        from seggpt.checkpoint import (
            NEAREST_COLOUR_THRESHOLD,
            PAPER_VIDEO_CONTEXT,
            default_threshold,
            default_video_context,
            load_model,
            to_precision,
        )
        from seggpt.devices import parse_dtype, resolve_device

        device, dtype = resolve_device(device), None if dtype is None else parse_dtype(dtype)
        threshold = None if threshold is None else check_threshold(threshold)  # fails before any model loads
        scales = check_scales(scales)

        given, source = isinstance(model, SegGPT), model
        if given:
            if image_size is not None:
                raise ValueError("image_size applies when the predictor loads the model; pass a path or None")
            model = to_precision(model, device, dtype) if dtype is not None else model.to(device)
            self.video_context = PAPER_VIDEO_CONTEXT
            default = NEAREST_COLOUR_THRESHOLD
        else:
            self.video_context = default_video_context(model)
            default = default_threshold(model, video=video)
            model = load_model(model, device=device, dtype=dtype or torch.float32, image_size=image_size, video=video)
        if upsample not in UPSAMPLING:
            raise ValueError(f"unknown upsample {upsample!r}; use one of {UPSAMPLING}")
        self.model = model.eval()
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.upsample = upsample
        self.threshold = default if threshold is None else threshold
        self.config = model.config
        self._embedded: OrderedDict[bytes, tuple[Tensor, Tensor | None]] = OrderedDict()
        # Keep the targets' embeddings too (EMBED_CACHE), for when a target prompts the next: set by video.
        self.keep_targets = False
        self.scales, self.flip = scales, bool(flip)
        # The other scales' views, each a predictor at its size. A model this loads is loaded again at that size
        # (exactly `--image-size`: the checkpoint's relative position tables resized once; one more copy of the
        # weights per scale). A given model's view shares its modules and weights under a config of another size,
        # and attention resizes the tables it holds to the grid it meets.
        self._views: list[SegGPTPredictor] = []
        for scale in sorted(s for s in scales if s != 1.0):
            size = scaled_size(self.config.image_size, scale, self.config.patch_size)
            if size == tuple(self.config.image_size):
                raise ValueError(f"scale {scale:g} of {self.config.image_size} rounds to the model's own size")
            if given:
                twin = model_at_size(self.model, size)
            else:
                twin = load_model(source, device=device, dtype=dtype or torch.float32, image_size=size, video=video)
            self._views.append(SegGPTPredictor(twin, device=device, upsample=upsample, threshold=self.threshold))
        # With keep_aspect, a predictor for each other shape met (its twin: the same modules and weights under a
        # config of that size, as a given model's views are made), given the examples when it is first used after
        # set_prompts; and the answer size each shape's queries come at, to find their twin in paint.
        self.keep_aspect = bool(keep_aspect)
        self._shapes: OrderedDict[tuple[int, int], SegGPTPredictor] = OrderedDict()
        self._shape_of_answer: dict[tuple[int, int], tuple[int, int]] = {}
        self._examples: tuple | None = None  # what set_prompts gave _set, for the twins
        self._prompted = 0  # how many times examples were set; a twin set for an earlier time is set again
        self._prompted_for = -1
        self._reset()

    @property
    def answer_size(self) -> tuple[int, int]:
        """(h, w) of the queries :meth:`prepare_target` makes and of the answers :meth:`paint` returns: the model's
        image size, or with other ``scales`` the largest view's."""
        return max([tuple(self.config.image_size)] + [tuple(v.config.image_size) for v in self._views])

    def _reset(self) -> None:
        self.num_prompts = 0
        self.ensemble: str | None = None
        self.task: str | None = None
        self.palette: np.ndarray | None = None
        self.prompt_images: Tensor | None = None  # (P', 3, h, w) normalised, model dtype (P' = 1 when spatial)
        self.prompt_masks: Tensor | None = None
        self._x_top: Tensor | None = None  # (P', Hp/2, Wp, C) patch embedding of the prompt images
        self._y: Tensor | None = None  # (P', Hp, Wp, C) patch embedding of the mask canvas (prompt mask twice)
        self._grid: tuple[int, int] | None = None
        # With the correspondence prior: what a query reads of the prompts, (P', K, D) and (P', K, 3).
        self._keys: tuple[Tensor, Tensor] | None = None

    # Prompts -----------------------------------------------------------------------------------------------
    def set_prompts(
        self,
        images: Sequence[ImageSource] | ImageSource,
        masks: Sequence[ImageSource] | ImageSource,
        task: str = "semantic",
        ensemble: str | None = None,
        num_labels: int | None = None,
    ) -> None:
        """Read, paint and embed the examples once.

        Args:
            images: example images (paths, PIL images or arrays; grey, RGB, RGBA, 16-bit), or one of them.
            masks: one mask per image, same size: binary, a 2-D label map, a palette PNG or an RGB colour mask
                (see :func:`seggpt.io.read_mask`). Colour masks are numbered jointly, so a colour is one label
                in all of them.
            task: "semantic" (segment the category) or "instance" (segment the same object).
            ensemble: "feature", "spatial" or "none"; None = "feature" for several examples.
            num_labels: the number of foreground labels K (labels 1..K); None = the largest label present.

        Raises:
            ValueError: count or size mismatch, unreadable files, too many labels; the message says which.
        """
        images, masks = _as_list(images), _as_list(masks)
        if len(images) != len(masks):
            raise ValueError(
                f"{len(images)} prompt image(s) but {len(masks)} mask(s): give exactly one mask per image, "
                "in the same order"
            )
        if not images:
            raise ValueError("no prompts: give at least one example image and its mask")
        read = [read_image_reduced(im, max(self.answer_size)) for im in images]
        arrays, sizes = [a for a, _ in read], [hw for _, hw in read]
        loaded = [load_mask_array(m) for m in masks]
        labels = [a for a, _ in loaded]
        colour_at = [i for i, (_, kind) in enumerate(loaded) if kind == "colours"]
        if colour_at:
            maps, _ = colours_to_labels([loaded[i][0] for i in colour_at])
            for i, m in zip(colour_at, maps, strict=True):
                labels[i] = m
        for i, (hw, lab) in enumerate(zip(sizes, labels, strict=True)):
            if tuple(hw) != lab.shape:
                raise ValueError(
                    f"prompt {i}: the mask {describe(masks[i])} is {lab.shape[1]}x{lab.shape[0]} (WxH) but its "
                    f"image {describe(images[i])} is {hw[1]}x{hw[0]}; a mask must have its image's size"
                )
            if not lab.any():
                warnings.warn(
                    f"prompt {i}: the mask {describe(masks[i])} is empty (all background); the model will "
                    "learn to find nothing from this example",
                    UserWarning,
                    stacklevel=2,
                )
        top = max(int(lab.max()) for lab in labels)
        if num_labels is None:
            num_labels = max(top, 1)
        elif top > num_labels:
            raise ValueError(f"the masks hold label {top} but num_labels is {num_labels}; raise num_labels")
        palette = checked_palette(num_labels)
        painted = [to_chw(paint(lab, palette)) for lab in labels]
        examples = ([to_chw(a) for a in arrays], painted, task, ensemble, palette)
        self._set_views(examples)
        self._examples = examples if self.keep_aspect else None
        self._prompted += 1

    def _set_views(self, examples: tuple) -> None:
        """Give this predictor and its views at other scales the examples (images and painted masks as read)."""
        for view in [self, *self._views]:
            view._set(*examples, resized=False)

    def set_prompt_tensors(
        self,
        images: Tensor,
        masks: Tensor,
        task: str = "semantic",
        num_labels: int | None = None,
        ensemble: str | None = None,
    ) -> None:
        """Examples already prepared as the model sees them (learned prompts from in-context tuning).

        Args:
            images, masks: (P, 3, h, w) at ``config.image_size``, normalised (ImageNet mean/std of [0, 1]).
            num_labels: how many foreground labels the masks paint with the palette; None = 1 (binary).
        """
        if self._views:
            raise ValueError(
                "prompt tensors are made at the model's own size; other scales need examples given as images "
                "(set_prompts), or a predictor without scales"
            )
        h, w = self.config.image_size
        if images.ndim == 3:
            images, masks = images[None], masks[None]
        if images.shape != masks.shape or images.ndim != 4 or tuple(images.shape[1:]) != (3, h, w):
            raise ValueError(
                f"prompt tensors must both be (P, 3, {h}, {w}); got images {tuple(images.shape)}, "
                f"masks {tuple(masks.shape)}"
            )
        palette = checked_palette(num_labels or 1)
        self._set(list(images.detach()), list(masks.detach()), task, ensemble, palette, resized=True)
        self._examples = None  # made at this size: targets are read at it
        self._prompted += 1

    def _set(
        self, images: list[Tensor], masks: list[Tensor], task: str, ensemble: str | None, palette, resized: bool
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; use one of {sorted(TASKS)}")
        k = len(images)
        ensemble = ensemble or ("feature" if k > 1 else "none")
        if ensemble not in ENSEMBLES:
            raise ValueError(f"unknown ensemble {ensemble!r}; use one of {ENSEMBLES}")
        size, patch = self.config.image_size, self.config.patch_size
        if ensemble == "spatial":
            if self._views or self.flip:
                raise ValueError(
                    "the spatial ensemble tiles the query itself: use ensemble 'feature' or 'none' with scales or "
                    "flip, or a predictor without them"
                )
            self._grid = grid_layout(k)
            if resized:  # tensors are normalised already: tile them as they are
                img = tile(images, size, self._grid, patch, "normalised")
                msk = tile(masks, size, self._grid, patch, "mask")
            else:
                img = normalize(tile(images, size, self._grid, patch, "image"))
                msk = normalize(tile(masks, size, self._grid, patch, "mask"))
            img, msk = img[None], msk[None]
        else:
            self._grid = None
            if resized:
                img, msk = torch.stack(images).float(), torch.stack(masks).float()
            else:
                img = normalize(torch.stack([resize_image(x, size) for x in images]))
                msk = normalize(torch.stack([resize_mask(x, size) for x in masks]))
        self.prompt_images = img.to(self.device, self.dtype)
        self.prompt_masks = msk.to(self.device, self.dtype)
        with torch.no_grad():
            self._x_top, descriptors = self._embed(self.prompt_images)
            y_top = self.model.patch_embed(self.prompt_masks)
            self._keys = self.model.example_keys(descriptors, self.prompt_masks) if self.config.fine_prior else None
        # The mask canvas is the prompt mask above a copy of it (as the released code builds it); the copy's
        # patches are all replaced by the mask token, so its content never matters.
        self._y = torch.cat([y_top, y_top], dim=1)
        self.num_prompts = k
        self.ensemble = ensemble
        self.task = task
        self.palette = palette
        log.info("prompts set: %d example(s), task %s, ensemble %s, %d label(s)", k, task, ensemble, len(palette) - 1)

    def _fingerprints(self, images: Tensor) -> list[bytes]:
        """A key per image (P, 3, h, w): its bytes, shape and dtype, and the model's weights' in-place version
        (a model changed in place embeds afresh)."""
        version = sum(t._version for t in itertools.chain(self.model.parameters(), self.model.buffers()))
        out = []
        for image in images.detach():
            digest = hashlib.blake2b(f"{tuple(image.shape)} {image.dtype} {version}".encode(), digest_size=20)
            digest.update(image.contiguous().view(torch.uint8).cpu().numpy().data)
            out.append(digest.digest())
        return out

    def _keep(self, keys: list[bytes], tokens: Tensor, descriptors: Tensor | None) -> None:
        """Remember the embeddings of images (the :data:`EMBED_CACHE` most recent)."""
        for i, key in enumerate(keys):
            self._embedded[key] = (tokens[i].clone(), None if descriptors is None else descriptors[i].clone())
            self._embedded.move_to_end(key)
        while len(self._embedded) > EMBED_CACHE:
            self._embedded.popitem(last=False)

    def _embed(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Image tokens (P, h/p, w/p, C) and, with the correspondence prior, descriptors (P, D, h/8, w/8) of
        prompt images: those embedded before (as examples or targets) from the cache, the rest in one call."""
        if EMBED_CACHE <= 0:
            tokens, skips = self.model.embed_images(images)
            return tokens, skips[2] if self.config.fine_prior else None
        keys = self._fingerprints(images)
        found = {i: self._embedded[k] for i, k in enumerate(keys) if k in self._embedded}
        missing = [i for i in range(len(keys)) if i not in found]
        if missing:
            tokens, skips = self.model.embed_images(images[missing])
            descriptors = skips[2] if self.config.fine_prior else None
            for j, i in enumerate(missing):
                found[i] = (tokens[j], None if descriptors is None else descriptors[j])
            self._keep([keys[i] for i in missing], tokens, descriptors)
        tokens = torch.stack([found[i][0] for i in range(len(keys))])
        return tokens, torch.stack([found[i][1] for i in range(len(keys))]) if self.config.fine_prior else None

    # Targets -----------------------------------------------------------------------------------------------
    def prepare_target(self, target: ImageSource) -> tuple[Tensor, tuple[int, int]]:
        """Read one target as the model sees it: ((3, h, w) normalised, model dtype, at :attr:`answer_size`; its
        full size (H, W)).

        Files are decoded only as finely as the model needs (:func:`seggpt.io.read_image_reduced`): a
        12000 x 12000 JPEG costs a few MB here. The full size is where :meth:`decode` puts the answer.

        Raises:
            FileNotFoundError / ValueError: a target that cannot be read, or over the pixel limit (named).
        """
        if self._examples is not None:  # keep_aspect: the twin for the target's shape reads it
            a, size = read_image_reduced(target, lambda h, w: max(self._for_image(h, w).answer_size))
            return self._for_image(*size)._query(a), size
        a, size = read_image_reduced(target, max(self.answer_size))
        return self._query(a), size

    def _query(self, image: np.ndarray) -> Tensor:
        """An image (h, w, 3) as a query at :attr:`answer_size`, normalised, in the model's dtype and device."""
        if self._grid is not None:
            q = tile([to_chw(image)], self.answer_size, self._grid, self.config.patch_size, "image")
        else:
            q = resize_image(to_chw(image), self.answer_size)
        return normalize(q).to(self.device, self.dtype)

    def prepare_targets(self, targets: Sequence[ImageSource]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Read targets of one shape and make them query halves: ((T, 3, h, w) normalised, model dtype; full sizes
        (H, W)). With ``keep_aspect``, targets of other shapes make queries of other sizes: use
        :meth:`prepare_target` for each, then :meth:`paint_each`.

        Raises:
            ValueError: with ``keep_aspect``, targets that make queries of different sizes.
        """
        prepared = [self.prepare_target(t) for t in targets]
        if len({tuple(q.shape) for q, _ in prepared}) > 1:
            raise ValueError(
                "these targets have different shapes, and each is read at its own (keep_aspect): prepare each "
                "with prepare_target and paint them with paint_each"
            )
        return torch.stack([q for q, _ in prepared]), [hw for _, hw in prepared]

    def _for_image(self, height: int, width: int) -> SegGPTPredictor:
        """The predictor for an image of this size with ``keep_aspect``: this one, or the twin for its shape."""
        return self._twin(aspect_size(height, width, self.config.image_size, self.config.patch_size))

    def _twin(self, shape: tuple[int, int]) -> SegGPTPredictor:
        """This predictor at another image size (h, w) (itself at its own), on its modules and weights, with the
        examples of the latest :meth:`set_prompts`."""
        if shape == tuple(self.config.image_size):
            return self
        twin = self._shapes.get(shape)
        if twin is None:
            twin = SegGPTPredictor(
                model_at_size(self.model, shape),
                self.device,
                upsample=self.upsample,
                threshold=self.threshold,
                scales=self.scales,
                flip=self.flip,
            )
            self._shapes[shape] = twin
            self._shape_of_answer[twin.answer_size] = shape
            while len(self._shapes) > SHAPES_KEPT:
                self._shapes.popitem(last=False)
        self._shapes.move_to_end(shape)
        if twin._prompted_for != self._prompted and self._examples is not None:
            twin._set_views(self._examples)
            twin._prompted_for = self._prompted
        return twin

    def paint(self, queries: Tensor, cached: bool = True) -> Tensor:
        """The model's painted answers for prepared queries.

        Args:
            queries: (T, 3, h, w) normalised query images at :attr:`answer_size` (from :meth:`prepare_targets`).
            cached: use the cached prompt embeddings (the fast path); False runs the plain full-canvas
                ``model(...)`` on stacked canvases (the reference the fast path is tested against).

        Returns:
            (T, 3, h, w) float32 in [0, 255]: the answer after the ensemble (and un-tiling for ``spatial``), with
            ``scales`` or ``flip`` the mean of every view's answer at the largest view's size.
        """
        self._require_prompts()
        shape = self._shape_of_answer.get(tuple(queries.shape[-2:]))
        if self._examples is not None and shape is not None:  # keep_aspect: queries of another shape
            return self._twin(shape).paint(queries, cached)
        if not self._views and not self.flip:
            return self._paint_view(queries, cached)
        size, q_dtype = tuple(queries.shape[-2:]), queries.dtype
        total, count = None, 0
        for view in [self, *self._views]:
            own = tuple(view.config.image_size)
            # Smaller views are the query resized as an image (in [0, 255], as prepare_target resizes it).
            q = queries if own == size else normalize(resize_image(denormalize(queries.float()), own)).to(q_dtype)
            answers = [view._paint_view(q, cached)]
            if self.flip:
                answers.append(view._paint_view(q.flip(-1), cached).flip(-1))
            for a in answers:
                a = a if own == size else F.interpolate(a, size=size, mode="bilinear", align_corners=False)
                total = a if total is None else total + a
                count += 1
        return total / count

    def paint_each(self, queries: Sequence[Tensor]) -> list[Tensor]:
        """:meth:`paint` for queries of any sizes (from :meth:`prepare_target`, with ``keep_aspect``): those of one
        size are painted together. Returns each query's answer (3, h, w), in order."""
        out: list[Tensor | None] = [None] * len(queries)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(tuple(q.shape), []).append(i)
        for idx in groups.values():
            for i, answer in zip(idx, self.paint(torch.stack([queries[i] for i in idx])), strict=True):
                out[i] = answer
        return out  # type: ignore[return-value]

    def _paint_view(self, queries: Tensor, cached: bool) -> Tensor:
        """One view's answers: :meth:`paint` at this predictor's own size, queries at that size."""
        p = self.prompt_images.shape[0]  # examples per query as the network sees them (1 when spatial)
        if self.device.type == "cpu":
            gh, gw = self.config.grid_size
            step = max(1, CPU_TOKENS_PER_FORWARD // (gh * gw * p))
            if queries.shape[0] > step:
                return torch.cat(
                    [self._paint_view(queries[i : i + step], cached) for i in range(0, len(queries), step)]
                )
        m = self.model
        q = queries.to(self.device, self.dtype)
        t = q.shape[0]
        feature = self.ensemble == "feature" and p > 1
        seg_type = torch.tensor([TASKS[self.task]], device=self.device)
        with torch.no_grad():
            if cached:
                # T x P canvases, P fastest: the cached prompt tokens above each query's tokens.
                x_q, skips = m.embed_images(q)
                if self.keep_targets and EMBED_CACHE > 0 and self._grid is None:  # it prompts the next
                    self._keep(self._fingerprints(q), x_q, skips[2] if self.config.fine_prior else None)
                x = torch.cat([self._x_top.repeat(t, 1, 1, 1), x_q.repeat_interleave(p, dim=0)], 1)
                y = self._y.repeat(t, 1, 1, 1)
                tokens = m.embed(x, y, m.query_mask(self.device), seg_type)
                prior = None
                if feature:  # the query half once per target (equal across its P canvases); one decode each
                    taps = m.forward_encoder_shared(tokens, p)
                    if self._keys is not None:  # each target reads all P examples at once
                        prior = m.ensemble_prior(skips[2], *self._keys)
                else:
                    taps = m.forward_encoder(tokens)
                    skips = [s.repeat_interleave(p, dim=0) for s in skips]
                    if self._keys is not None:  # canvas (target i, example j) reads example j
                        keys, values = (k.repeat(t, 1, 1) for k in self._keys)
                        prior = correspondence_prior(skips[2], keys, values)
                out = m.forward_decoder(taps, query_only=True, skips=skips, prior=prior)
            else:
                images = stack_canvas(self.prompt_images.repeat(t, 1, 1, 1), q.repeat_interleave(p, dim=0))
                masks = stack_canvas(self.prompt_masks, self.prompt_masks).repeat(t, 1, 1, 1)
                out = m(images, masks, m.query_mask(self.device), seg_type.expand(t * p), feature, num_prompts=p)
                out = query_half(out)
                if feature:
                    out = out[::p]
        out = denormalize(out.float())
        if not feature:  # "none": average the independent answers (P = 1: unchanged)
            out = out.reshape(t, p, *out.shape[1:]).mean(1)
        if self._grid is not None:
            out = untile(out, self._grid, self.config.patch_size)
        return out

    def predict(self, target: ImageSource) -> Prediction:
        """Segment one target (path, PIL image or array) with the examples set by :meth:`set_prompts`."""
        return self.predict_batch([target], batch_size=1)[0]

    def predict_batch(
        self, targets: Sequence[ImageSource], batch_size: int = 8, progress: bool = False
    ) -> list[Prediction]:
        """Segment many targets, ``batch_size`` at a time (each runs as batch_size x P canvases).

        Raises:
            ValueError / FileNotFoundError: a target that cannot be read (named in the message).
        """
        self._require_prompts()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        targets = list(targets)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(targets), unit="image")
        out = []
        try:
            for s in range(0, len(targets), batch_size):
                chunk = targets[s : s + batch_size]
                prepared = [self.prepare_target(t) for t in chunk]
                raw = self.paint_each([q for q, _ in prepared])
                sizes = [hw for _, hw in prepared]
                out.extend(self.decode(r, hw) for r, hw in zip(raw, sizes, strict=True))
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return out

    def decode(self, raw: Tensor, size: tuple[int, int]) -> Prediction:
        """A painted answer (3, h, w) in [0, 255] -> :class:`Prediction` at ``size`` = (H, W)."""
        labels, _, scores = decode_answer(raw, self.palette, size, self.upsample, self.threshold)
        labels = labels.cpu().numpy().astype(np.int32)
        return Prediction(
            labels=labels,
            color=self.palette[labels],
            scores=scores.cpu().numpy().astype(np.float32),
            raw=raw.permute(1, 2, 0).cpu().numpy().astype(np.float32),
            palette=self.palette,
        )

    def save_answer(
        self,
        raw: Tensor,
        size: tuple[int, int],
        labels_path: str | os.PathLike,
        color_path: str | os.PathLike | None = None,
        overlay_path: str | os.PathLike | None = None,
        image: ImageSource | None = None,
        overwrite: bool = False,
        overlay_max_pixels: int | None = None,
    ) -> None:
        """Decode a painted answer straight into files, a band of rows at a time, in memory that does not grow
        with the target: what :meth:`decode` then the ``Prediction.save_*`` methods write, for targets of any size.

        Args:
            raw: (3, h, w) painted answer in [0, 255] (one entry of :meth:`paint`).
            size: the target's full (H, W): the label map's size.
            labels_path: the label map (indexed PNG with the model's palette; 16-bit grey above 255 labels).
            color_path: optional RGB PNG of the palette colours.
            overlay_path: optional overlay (JPEG or PNG by suffix) of ``image``. It has the target's size up to
                ``overlay_max_pixels`` (default :data:`OVERLAY_MAX_PIXELS`); a larger target's overlay is reduced
                by the smallest whole factor that fits (a preview; the label map keeps the full size).
            image: the target, needed for the overlay.
        """
        self._require_prompts()
        height, width = size
        if overlay_path is not None and image is None:
            raise ValueError("save_answer: an overlay needs the target image")
        mode = label_png_mode(len(self.palette) - 1)
        limit = OVERLAY_MAX_PIXELS if overlay_max_pixels is None else overlay_max_pixels
        f = 1
        while -(-height // f) * -(-width // f) > limit:
            f += 1
        # The overlay's pixel (i, j) shows the label at the centre of its f x f block of the target.
        oy = np.minimum(np.arange(-(-height // f)) * f + f // 2, height - 1)
        ox = np.minimum(np.arange(-(-width // f)) * f + f // 2, width - 1)
        small = np.zeros((len(oy), len(ox)), np.uint8 if mode == "P" else np.int32) if overlay_path else None
        decoder = LabelDecoder(raw, self.palette, size, self.upsample, self.threshold)
        with contextlib.ExitStack() as stack:
            f_lab = stack.enter_context(open(stack.enter_context(atomic_file(labels_path, overwrite)), "wb"))
            lab_png = PngWriter(f_lab, width, height, mode, self.palette)
            col_png = None
            if color_path is not None:
                f_col = stack.enter_context(open(stack.enter_context(atomic_file(color_path, overwrite)), "wb"))
                col_png = PngWriter(f_col, width, height, "RGB")
            for y0, y1 in row_bands(height, width, 1 << 20):
                labels = decoder((y0, y1)).cpu().numpy()
                lab_png.write(labels)
                if col_png is not None:
                    col_png.write(self.palette[labels])
                if small is not None:
                    pick = (oy >= y0) & (oy < y1)
                    small[pick] = labels[oy[pick] - y0][:, ox]
            lab_png.close()
            if col_png is not None:
                col_png.close()
            if small is not None:  # before the label files are published: all of a target's files, or none
                # Drawn a band at a time into the decoded image itself: no second full-size copy.
                img = open_image_resized(image, small.shape)
                colours, line = overlay_colours(len(self.palette) - 1), contour_width(*small.shape)
                for y0, y1 in row_bands(*small.shape, 1 << 20):
                    band = np.array(img.crop((0, y0, img.width, y1)))
                    a = max(0, y0 - line)
                    draw_overlay(band, small[a : y1 + line], OVERLAY_ALPHA, colours, line, out=band, above=y0 - a)
                    img.paste(Image.fromarray(band), (0, y0))
                save_image(img, overlay_path, overwrite=overwrite)

    def _require_prompts(self) -> None:
        if self.prompt_images is None:
            raise RuntimeError("no examples yet: call set_prompts(images, masks) before predicting")
