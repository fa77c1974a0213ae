"""In-context tuning: freeze the model and learn the example itself.

The paper's strongest ADE20K and COCO-panoptic numbers come from a *learned prompt*: the whole model is frozen and
the example (the upper half of the image canvas, and here optionally of the mask canvas) becomes a tensor optimised
with the training loss on a task's training set. The learned prompt then serves as the example for every test image.
The authors released neither the code nor the prompts; this module is an implementation from the paper's
description.

A learned prompt is stored as one small safetensors file: the (P, 3, h, w) example image and mask tensors in the
model's normalised space, plus JSON metadata (task, the dataset classes behind each palette colour, the model
fingerprint). It only makes sense for the exact weights it was tuned for, so loading it into another model is
refused (:class:`PromptMismatchError`).

Two ways to cover several classes:
    multi      one prompt whose mask is painted with ``build_palette(K)``: colour k stands for ``classes[k - 1]``;
               one forward per target, as the paper's ADE20K prompt.
    per-class  one binary prompt (white on black) per class, tuned jointly in one loop; a file holds K prompts and
               :func:`predict_per_class` (through the predictor) or :func:`segment_per_class` (tensors) merges
               their answers.

Instance task: ``task="instance"`` tunes with the instance type token, but the targets are still painted by class
id (instance colours are arbitrary per image, so there is no fixed colour a prompt could learn for them).

Shapes: G prompt groups (1, or K in per-class mode), P examples per group (feature ensemble), B queries, (h, w) one
image (``config.image_size``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seggpt.coloring import build_palette, decode
from seggpt.io import atomic_write
from seggpt.modeling import INSTANCE, SEMANTIC, SegGPT
from seggpt.stopping import StopRequest
from seggpt.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize, normalize, resize_image, resize_mask

log = logging.getLogger(__name__)

PROMPT_FORMAT = "seggpt-prompt-v1"
CHECKPOINT_FORMAT = "seggpt-tune-state-v1"
TASKS = {"semantic": SEMANTIC, "instance": INSTANCE}
MODES = ("multi", "per-class")
LOSSES = ("canvas", "iou", "both")
# Elements read from each tensor for the fingerprint (see model_fingerprint).
_FINGERPRINT_SAMPLES = 4096


class PromptMismatchError(ValueError):
    """A learned prompt used with a model other than the one it was tuned for."""


# Model fingerprint ------------------------------------------------------------------------------------------
def model_fingerprint(model: SegGPT) -> str:
    """A short identity of the weights a prompt was tuned for: ``"sha256:<64 hex>"``.

    Hashes the config JSON, every tensor's name and shape, and a deterministic sample of its values: up to 4096
    evenly spaced elements per tensor, rounded to bfloat16. Reading every byte of a ViT-L (1.5 GB) would take
    seconds; the sample takes milliseconds and still changes with any fine-tuning (which moves nearly every weight).
    The bfloat16 rounding makes float32 and bfloat16 copies of the same weights share a fingerprint, so a prompt
    tuned on a float32 model can be used with the model loaded in bfloat16. Device does not matter.
    """
    h = hashlib.sha256()
    h.update(model.config.to_json().encode())
    for name, t in sorted(model.state_dict().items()):
        flat = t.detach().reshape(-1)
        n = flat.numel()
        k = min(n, _FINGERPRINT_SAMPLES)
        idx = torch.arange(k, dtype=torch.int64) * (n - 1) // max(k - 1, 1)
        sample = flat[idx.to(flat.device)].to(device="cpu", dtype=torch.bfloat16).view(torch.int16)
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(sample.numpy().tobytes())
    return "sha256:" + h.hexdigest()


def _without_size(config: dict) -> dict:
    """A model config as JSON would give it back (lists, not tuples), without the canvas size."""
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k != "img_size"}


def _describe(config: dict) -> str:
    return (
        f"depth {config.get('depth')}, width {config.get('embed_dim')}, canvas "
        f"{'x'.join(str(s) for s in config.get('img_size', ()))}"
    )


# The learned prompt ------------------------------------------------------------------------------------------
@dataclass
class LearnedPrompt:
    """A tuned example: what the predictor uses in place of example images and masks.

    Attributes:
        images: (P, 3, h, w) example images in normalised space (ImageNet mean/std of x / 255).
        masks: (P, 3, h, w) example mask canvases' upper halves, normalised the same way.
        task: "semantic" or "instance" (which type token the model is given).
        classes: the dataset label behind each palette colour: label ``k`` of a prediction (1..K) is
            ``classes[k - 1]``; 0 is background.
        fingerprint: :func:`model_fingerprint` of the model it was tuned for.
        model_config: that model's config as a dict (for error messages).
        info: free-form provenance (steps, final loss, init, data folder).
    """

    images: Tensor
    masks: Tensor
    task: str
    classes: tuple[int, ...]
    fingerprint: str
    model_config: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; use one of {sorted(TASKS)}")
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.images.shape != self.masks.shape:
            raise ValueError(
                f"images and masks must both be (P, 3, h, w); got {tuple(self.images.shape)} and "
                f"{tuple(self.masks.shape)}"
            )
        if not self.classes:
            raise ValueError("a learned prompt needs at least one class")
        self.classes = tuple(int(c) for c in self.classes)

    @property
    def num_labels(self) -> int:
        """K, the number of foreground colours."""
        return len(self.classes)

    @property
    def palette(self) -> np.ndarray:
        """(K + 1, 3) uint8: ``build_palette(K)``, the palette the predictor decodes with."""
        return build_palette(self.num_labels)

    @property
    def num_prompts(self) -> int:
        return int(self.images.shape[0])

    def check_model(self, model: SegGPT, where: str = "this prompt") -> None:
        """Raise :class:`PromptMismatchError` unless ``model`` has the weights the prompt was tuned for."""
        actual = model_fingerprint(model)
        if actual != self.fingerprint:
            tuned_at, runs_at = tuple(self.images.shape[-2:]), tuple(model.config.image_size)
            same_model = _without_size(self.model_config) == _without_size(model.config.to_dict())
            if tuned_at != runs_at and same_model:
                # Another --image-size resizes the position tables, so the fingerprint differs; the fix is the size.
                raise PromptMismatchError(
                    f"{where} was tuned at image size {tuned_at[0]}x{tuned_at[1]} but the model runs at "
                    f"{runs_at[0]}x{runs_at[1]}: run at the size it was tuned at (--image-size {tuned_at[0]}"
                    + ("" if tuned_at[0] == tuned_at[1] else f", or load_model(image_size={tuned_at})")
                    + "), or tune a prompt at this size"
                )
            raise PromptMismatchError(
                f"{where} was tuned for model {self.fingerprint[7:19]} ({_describe(self.model_config)}) but the "
                f"loaded model is {actual[7:19]} ({_describe(model.config.to_dict())}). A learned prompt only "
                "works with the exact weights it was tuned for: load that model (--weights) or tune a new prompt "
                "for this one (seggpt tune --weights ...)."
            )

    def apply(self, predictor: Any, ensemble: str | None = None, where: str = "this prompt") -> None:
        """Check the predictor's model and make this prompt its example (``set_prompt_tensors``)."""
        self.check_model(predictor.model, where=where)
        p = next(predictor.model.parameters())
        predictor.set_prompt_tensors(
            self.images.to(p.device),
            self.masks.to(p.device),
            task=self.task,
            num_labels=self.num_labels,
            ensemble=ensemble or ("feature" if self.num_prompts > 1 else "none"),
        )

    def to_uint8(self) -> tuple[np.ndarray, np.ndarray]:
        """The prompt as pictures: images and masks (P, h, w, 3) uint8, to look at what was learned."""
        img = denormalize(self.images.detach().float().cpu()).round().to(torch.uint8).permute(0, 2, 3, 1)
        msk = denormalize(self.masks.detach().float().cpu()).round().to(torch.uint8).permute(0, 2, 3, 1)
        return img.numpy(), msk.numpy()

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write this prompt alone to ``path`` (see :func:`save_prompts`)."""
        return save_prompts([self], path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LearnedPrompt:
        """Read a file holding exactly one prompt."""
        prompts = load_prompts(path)
        if len(prompts) != 1:
            raise ValueError(
                f"{path} holds {len(prompts)} per-class prompts; read it with seggpt.tuning.load_prompts and use "
                "predict_per_class, or tune one multi-colour prompt (seggpt tune --mode multi)"
            )
        return prompts[0]


# Files -------------------------------------------------------------------------------------------------------
def save_prompts(prompts: Sequence[LearnedPrompt], path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write one or several (per-class) learned prompts to one safetensors file, atomically.

    Tensors ``prompt.{g}.images`` / ``prompt.{g}.masks`` (float32, exact); metadata ``format``, ``fingerprint``,
    ``config`` (the model's) and ``prompts`` (JSON list of task, classes, info per prompt).
    """
    from safetensors.torch import save_file

    if not prompts:
        raise ValueError("nothing to save: no prompts")
    fps = {p.fingerprint for p in prompts}
    if len(fps) > 1:
        raise ValueError("prompts tuned for different models cannot share a file")
    tensors: dict[str, Tensor] = {}
    entries = []
    for g, p in enumerate(prompts):
        tensors[f"prompt.{g}.images"] = p.images.detach().float().cpu().contiguous()
        tensors[f"prompt.{g}.masks"] = p.masks.detach().float().cpu().contiguous()
        entries.append({"task": p.task, "classes": list(p.classes), "info": p.info})
    meta = {
        "format": PROMPT_FORMAT,
        "fingerprint": prompts[0].fingerprint,
        "config": json.dumps(prompts[0].model_config, sort_keys=True),
        "prompts": json.dumps(entries),
    }
    return atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta), overwrite)


def load_prompts(path: str | os.PathLike) -> list[LearnedPrompt]:
    """Read every prompt of a learned-prompt file (one, or K per-class prompts)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"learned prompt not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read {path} as a learned prompt (safetensors): {e}") from None
    if meta.get("format") != PROMPT_FORMAT:
        raise ValueError(
            f"{path} is not a learned prompt (format {meta.get('format')!r}, expected {PROMPT_FORMAT!r}); "
            "write one with `seggpt tune`"
        )
    entries = json.loads(meta["prompts"])
    config = json.loads(meta["config"])
    return [
        LearnedPrompt(
            images=tensors[f"prompt.{g}.images"],
            masks=tensors[f"prompt.{g}.masks"],
            task=e["task"],
            classes=tuple(e["classes"]),
            fingerprint=meta["fingerprint"],
            model_config=config,
            info=e.get("info", {}),
        )
        for g, e in enumerate(entries)
    ]


def load_prompt_into(predictor: Any, path: str | os.PathLike, ensemble: str | None = None) -> LearnedPrompt:
    """Load a learned-prompt file and make it the predictor's example, refusing a model it was not tuned for.

    This is the one call the ``segment``, ``video`` and ``eval`` commands make for ``--prompt-file``. The returned
    prompt's ``classes`` map predicted labels 1..K back to dataset labels.
    """
    prompt = LearnedPrompt.load(path)
    prompt.apply(predictor, ensemble=ensemble, where=str(path))
    return prompt


def predict_per_class(
    predictor: Any, prompts: Sequence[LearnedPrompt], targets: Sequence[Any], batch_size: int = 8
) -> list[np.ndarray]:
    """Segment targets with K binary per-class prompts (``seggpt tune --mode per-class``) through the predictor.

    Each prompt is applied in turn; a pixel takes the class whose prompt finds it with the highest confidence
    (``Prediction.scores``), or background when none does.

    Args:
        predictor: a ``SegGPTPredictor`` (its prompts are replaced).
        prompts: binary prompts, e.g. ``load_prompts(path)`` of a per-class file.
        targets: what ``predictor.predict_batch`` takes (paths, PIL images, arrays).

    Returns:
        One (H, W) int64 map of dataset class ids per target, at the target's size; 0 = background.
    """
    best: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for prompt in prompts:
        if prompt.num_labels != 1:
            raise ValueError("predict_per_class takes binary (one-class) prompts; apply a multi-colour one directly")
        prompt.apply(predictor)
        preds = predictor.predict_batch(list(targets), batch_size=batch_size)
        for i, pred in enumerate(preds):
            score = np.where(np.asarray(pred.labels) > 0, np.asarray(pred.scores, np.float32), -1.0)
            if i == len(best):
                best.append(np.full(score.shape, -1.0, np.float32))
                labels.append(np.zeros(score.shape, np.int64))
            win = score > best[i]
            best[i][win] = score[win]
            labels[i][win] = prompt.classes[0]
    return labels


class LearnedPromptVideo:
    """Segment every frame of a video with a learned prompt (no propagation): the ``seggpt video --prompt-file``
    path. Mirrors the parts of :class:`seggpt.video.SegGPTVideoPredictor` its command uses: :meth:`propagate`
    yields ``(frame_index, labels)``, ``last_frame`` and ``num_objects``.

    Labels are the dataset ids the prompt was tuned on (``prompt.classes``), 0 = background.
    """

    def __init__(self, predictor: Any, path: str | os.PathLike, ensemble: str | None = None) -> None:
        self.predictor = predictor
        self.prompt = load_prompt_into(predictor, path, ensemble=ensemble)
        self._lut = np.array([0, *self.prompt.classes], np.int64)
        self.last_frame: np.ndarray | None = None

    @property
    def num_objects(self) -> int:
        return self.prompt.num_labels

    def propagate(self, frames: Any) -> Any:
        """Frames as :func:`seggpt.video_io.open_frames` reads them -> iterator of (index, (H, W) int64 labels)."""
        from seggpt.video_io import open_frames

        source = open_frames(frames)

        def run():
            for t, frame in enumerate(source):
                self.last_frame = frame
                yield t, self._lut[np.asarray(self.predictor.predict(frame).labels)]

        return run()


# Data --------------------------------------------------------------------------------------------------------
class SegmentationData(Protocol):
    """What :func:`tune` reads: items of (image (3, h, w) in [0, 255], labels (h, w) int) at the model's image
    size. Labels are dataset class ids; 0 is background."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]: ...


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """A mask file as dataset class ids (H, W) int64 that mean the same in every file of a dataset.

    Palette PNGs give their raw indices (so a VOC-style 255 border stays 255, the ignore label); every other mask
    goes through :func:`seggpt.io.load_mask_array` (grey, 16-bit, binary 0/255 -> 0/1, lossy binary masks). An RGB
    colour mask gives ``r * 65536 + g * 256 + b`` per pixel (black is 0), so a class is named by its colour
    (``--classes '#ff0000'``) and is the same label in every file, whatever other colours a file holds.
    """
    from seggpt.io import load_mask_array, open_image

    path = Path(path)
    with open_image(path, "mask") as im:  # the reading path of every command: one clear error for a bad file
        if im.mode == "P":
            try:
                return np.asarray(im).astype(np.int64)
            except (OSError, ValueError, SyntaxError) as e:
                raise ValueError(f"cannot read mask {path}: {e}. Is it a complete image file?") from None
    a, kind = load_mask_array(path)
    if kind == "colours":
        c = a.astype(np.int64)
        return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
    return a


def parse_class(text: str) -> int:
    """A ``--classes`` entry: a label id (``3``) or a mask colour (``#ff8000``)."""
    text = text.strip()
    if text.startswith("#"):
        if len(text) != 7:
            raise ValueError(f"colour class {text!r} must look like #rrggbb")
        try:
            return int(text[1:], 16)
        except ValueError:
            raise ValueError(f"colour class {text!r} must look like #rrggbb") from None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"class {text!r} is neither a label id (an integer) nor a colour (#rrggbb)") from None


class FolderDataset:
    """The user-folder layout: ``DIR/images/<stem>.<ext>`` with ``DIR/masks/<stem>.<ext>`` (matching stems).

    ``load(i)`` gives the (H, W, 3) uint8 image and its (H, W) label map (:func:`read_label_map`) at full size,
    as the project's dataset readers do; :class:`ResizedDataset` brings items to the model's size.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        from seggpt.io import list_images

        root = Path(root).expanduser()
        img_dir, mask_dir = root / "images", root / "masks"
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise FileNotFoundError(
                f"{root} must contain images/ and masks/ (masks/<stem>.png beside images/<stem>.jpg)"
            )
        masks = {p.stem: p for p in list_images(mask_dir)}
        images = list_images(img_dir)
        missing = [p.name for p in images if p.stem not in masks]
        if missing:
            raise ValueError(f"{len(missing)} image(s) in {img_dir} have no mask in {mask_dir}: {missing[:5]}")
        if not images:
            raise ValueError(f"no images in {img_dir}")
        self.pairs = [(p, masks[p.stem]) for p in images]

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from seggpt.io import read_image

        img_path, mask_path = self.pairs[i]
        image, labels = read_image(img_path), read_label_map(mask_path)
        if image.shape[:2] != labels.shape:
            raise ValueError(
                f"{img_path.name} is {image.shape[1]}x{image.shape[0]} (WxH) but its mask {mask_path.name} is "
                f"{labels.shape[1]}x{labels.shape[0]}"
            )
        return image, labels

    def describe(self, i: int) -> str:
        return str(self.pairs[i][0])


class ResizedDataset:
    """Items of any reader with ``load(i) -> (image (H, W, 3) uint8, labels (H, W) int)`` (the project's dataset
    readers, :class:`FolderDataset`) as tensors at ``image_size``: image (3, h, w) uint8 (bicubic), labels (h, w)
    int64 (nearest). Cached in memory when there are at most ``cache_limit`` items, since tuning visits each many
    times."""

    def __init__(self, reader: Any, image_size: tuple[int, int], cache_limit: int = 4000) -> None:
        self.reader = reader
        self.image_size = tuple(image_size)
        self._cache: dict[int, tuple[Tensor, Tensor]] | None = {} if len(reader) <= cache_limit else None

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image, labels = self.reader.load(index)
        img = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)
        lab = torch.from_numpy(np.asarray(labels).astype(np.int64))
        item = (resize_image(img, self.image_size).round().to(torch.uint8), resize_mask(lab, self.image_size))
        if self._cache is not None:
            self._cache[index] = item
        return item


def open_folder(root: str | os.PathLike, image_size: tuple[int, int]) -> ResizedDataset:
    """A user folder (``images/`` + ``masks/``) ready for :func:`tune`."""
    return ResizedDataset(FolderDataset(root), image_size)


# Tuning ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TuneConfig:
    """How a prompt is tuned. Defaults suit a few hundred steps on a small model."""

    steps: int = 300
    batch_size: int = 8  # queries per step
    lr: float = 0.03  # AdamW on pixels in normalised space (unit ~ one std of ImageNet pixels)
    weight_decay: float = 0.0  # decay would pull the prompt towards the mean colour, not towards anything useful
    warmup: int = 10  # linear warm-up steps, then cosine decay to 0
    num_prompts: int = 1  # P examples per prompt, used together in a feature ensemble
    mode: str = "multi"  # "multi": one multi-colour prompt; "per-class": one binary prompt per class
    init: str = "example"  # "example": real training images with their masks; "noise": uniform random pixels
    learn: str = "both"  # which halves are learned: "image", "mask" or "both"
    positive_fraction: float = 0.5  # share of queries drawn from images that contain a tuned class
    flip: bool = True  # random horizontal flips of the queries
    ignore_index: int = 255  # label excluded from the loss
    # Loss weight of pixels of the tuned classes against 1 for the rest (training's masking.foreground_weight).
    # With small objects the uniform loss (1.0, the paper's) is lowest for a prompt that paints nothing.
    foreground_weight: float = 1.0
    # "canvas": the training loss (smooth-L1 on the painted query half, the paper's); "iou": one minus the soft
    # IoU of each tuned class over the batch, on the answer decoded softly to the palette (what is measured);
    # "both": their sum.
    loss: str = "canvas"
    iou_temperature: float = 16.0  # softness of that decoding, in pixel-value units (see soft_iou_loss)
    # Share of the dataset held out to choose the step: every ``val_every`` steps (and at the start and the end) the
    # prompt segments the held-out items, and the one with the best mean IoU is returned. 0: no hold-out, the last
    # step is returned.
    val_fraction: float = 0.0
    val_every: int = 25
    clamp: bool = True  # keep the prompt a valid picture ([0, 255] after de-normalisation)
    amp: bool = False  # bfloat16 autocast
    seed: int = 0
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        problems = []
        if self.steps < 1 or self.batch_size < 1 or self.num_prompts < 1:
            problems.append("steps, batch_size and num_prompts must be >= 1")
        if self.mode not in MODES:
            problems.append(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.init not in ("example", "noise"):
            problems.append(f"init must be 'example' or 'noise', got {self.init!r}")
        if self.learn not in ("image", "mask", "both"):
            problems.append(f"learn must be 'image', 'mask' or 'both', got {self.learn!r}")
        if not 0.0 <= self.positive_fraction <= 1.0:
            problems.append("positive_fraction must be in [0, 1]")
        if self.lr <= 0:
            problems.append("lr must be > 0")
        if self.foreground_weight <= 0:
            problems.append("foreground_weight must be > 0")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.iou_temperature <= 0:
            problems.append("iou_temperature must be > 0")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_every < 1:
            problems.append("val_every must be >= 1")
        if problems:
            raise ValueError("invalid TuneConfig: " + "; ".join(problems))


def _pixel_bounds(device: torch.device) -> tuple[Tensor, Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


def _groups(classes: Sequence[int], mode: str) -> list[tuple[int, ...]]:
    return [tuple(classes)] if mode == "multi" else [(c,) for c in classes]


def _group_index(labels: Tensor, group: tuple[int, ...]) -> Tensor:
    """Dataset labels -> palette indices: ``k`` where the label is ``group[k - 1]``, 0 elsewhere (long, same shape)."""
    index = torch.zeros_like(labels, dtype=torch.long)
    for k, c in enumerate(group, start=1):
        index[labels == c] = k
    return index


def _paint_targets(
    labels: Tensor, group: tuple[int, ...], ignore_index: int, foreground_weight: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Label maps (B, h, w) -> normalised target masks (B, 3, h, w) painted with build_palette(K) where colour k
    stands for group[k - 1], and loss weights (B, 1, h, w): 0 on ignored pixels, ``foreground_weight`` on the
    group's classes, 1 elsewhere."""
    index = _group_index(labels, group)
    palette = torch.from_numpy(build_palette(len(group))).to(labels.device).float()
    colours = palette[index].permute(0, 3, 1, 2)  # B h w 3 -> B 3 h w
    valid = ((labels != ignore_index) & (labels >= 0)).unsqueeze(1).float()
    if foreground_weight != 1.0:
        valid = valid * torch.where(index > 0, foreground_weight, 1.0).unsqueeze(1)
    return normalize(colours), valid


def dataset_classes(data: SegmentationData, ignore_index: int = 255) -> list[int]:
    """Every class id that appears in the dataset's masks, except background (0) and ``ignore_index``."""
    found: set[int] = set()
    for i in range(len(data)):
        found.update(torch.unique(data[i][1]).tolist())
    return sorted(c for c in found if c > 0 and c != ignore_index)


def _class_index(data: SegmentationData, classes: Sequence[int]) -> list[list[int]]:
    """For each class, the items whose labels contain it (reads every item once)."""
    where: list[list[int]] = [[] for _ in classes]
    for i in range(len(data)):
        present = set(torch.unique(data[i][1]).tolist())
        for k, c in enumerate(classes):
            if c in present:
                where[k].append(i)
    empty = [c for c, w in zip(classes, where, strict=True) if not w]
    if empty:
        raise ValueError(f"class(es) {empty} appear in none of the {len(data)} masks; check --classes")
    return where


def _initial_prompt(
    data: SegmentationData,
    groups: list[tuple[int, ...]],
    where: list[list[int]],
    classes: Sequence[int],
    cfg: TuneConfig,
    image_size: tuple[int, int],
    rng: np.random.Generator,
    init_examples: Sequence[int] | None,
) -> tuple[Tensor, Tensor]:
    """(G, P, 3, h, w) initial prompt images and masks, normalised."""
    g_n, p_n = len(groups), cfg.num_prompts
    if cfg.init == "noise":
        gen = torch.Generator().manual_seed(cfg.seed)
        images = normalize(torch.rand(g_n, p_n, 3, *image_size, generator=gen) * 255)
        masks = normalize(torch.rand(g_n, p_n, 3, *image_size, generator=gen) * 255)
        return images, masks
    images, masks = [], []
    for group in groups:
        if init_examples is not None:
            picks = list(init_examples)[:p_n]
            if len(picks) < p_n:
                raise ValueError(f"init_examples gives {len(picks)} items for {p_n} prompts")
        else:
            # Candidates show the group's classes; for one multi-colour prompt, prefer images with most of them.
            pool = sorted({i for k, c in enumerate(classes) if c in group for i in where[k]})
            picks = [int(i) for i in rng.choice(pool, size=p_n, replace=len(pool) < p_n)]
        imgs, labs = zip(*(data[i] for i in picks), strict=True)
        target, _ = _paint_targets(torch.stack(labs).long(), group, ignore_index=-1)
        images.append(normalize(torch.stack(imgs).float()))
        masks.append(target)
    return torch.stack(images), torch.stack(masks)


def _sample_batch(
    data: SegmentationData, where: list[list[int]], cfg: TuneConfig, rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """B query images (B, 3, h, w) in [0, 255] and their label maps (B, h, w)."""
    positives = sorted({i for w in where for i in w})
    imgs, labs = [], []
    for _ in range(cfg.batch_size):
        if rng.random() < cfg.positive_fraction:
            i = int(positives[rng.integers(len(positives))])
        else:
            i = int(rng.integers(len(data)))
        img, lab = data[i]
        if cfg.flip and rng.random() < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        imgs.append(img.float())
        labs.append(lab.long())
    return torch.stack(imgs), torch.stack(labs)


def _lr_at(step: int, cfg: TuneConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def prompt_loss(
    model: SegGPT,
    prompt_images: Tensor,
    prompt_masks: Tensor,
    query_images: Tensor,
    query_labels: Tensor,
    groups: list[tuple[int, ...]],
    task: str,
    ignore_index: int = 255,
    foreground_weight: float = 1.0,
    loss: str = "canvas",
    temperature: float = 16.0,
) -> Tensor:
    """The tuning loss of the prompts on one batch of queries.

    Args:
        prompt_images, prompt_masks: (G, P, 3, h, w) normalised.
        query_images: (B, 3, h, w) in [0, 255].
        query_labels: (B, h, w) dataset class ids.
        groups: the classes of each of the G prompts.
        foreground_weight: canvas-loss weight of the group's pixels (1 for the rest, 0 for ``ignore_index``).
        loss: "canvas" (the training loss), "iou" (:func:`soft_iou_loss`, averaged over the G prompts) or "both".
        temperature: the soft decoding's temperature for the IoU loss.

    Returns:
        The scalar loss. "canvas" is the smooth-L1 over the query halves, averaged over the B * G queries.
    """
    g_n, p_n = prompt_images.shape[:2]
    b = query_images.shape[0]
    q = normalize(query_images).to(prompt_images.device)
    targets, valids = zip(
        *(_paint_targets(query_labels, grp, ignore_index, foreground_weight) for grp in groups), strict=True
    )
    target = torch.stack(targets, 1).to(q.device)  # B G 3 h w
    valid = torch.stack(valids, 1).to(q.device)  # B G 1 h w
    # Canvas batch laid out (B, G, P), P fastest, as the feature ensemble reads it.
    shape = (b, g_n, p_n, 3, *q.shape[-2:])
    top_img = prompt_images.unsqueeze(0).expand(shape)
    top_msk = prompt_masks.unsqueeze(0).expand(shape)
    bot_img = q[:, None, None].expand(shape)
    bot_msk = target[:, :, None].expand(shape)
    images = torch.cat([top_img, bot_img], dim=-2).reshape(-1, 3, 2 * shape[-2], shape[-1])
    # The placeholder under the mask token never reaches the model (every query patch is replaced), so the prompt
    # mask is repeated there as at inference; the target only enters the loss.
    masks = torch.cat([top_msk, top_msk], dim=-2).reshape(-1, 3, 2 * shape[-2], shape[-1])
    n = images.shape[0]
    seg_type = torch.full((n,), TASKS[task], dtype=torch.long, device=q.device)
    dtype = next(model.parameters()).dtype
    # The loss only covers the query half, so only that half is decoded (exact, and it skips half of the
    # full-resolution decoder): the training loss of model(..., return_loss=True) restricted to where it is non-zero.
    pred = model(
        images.to(dtype),
        masks.to(dtype),
        model.query_mask(q.device),
        seg_type,
        feature_ensemble=p_n > 1,
        num_prompts=p_n,
        query_only=True,
    )
    total = pred.new_zeros((), dtype=torch.float32)
    if loss in ("canvas", "both"):
        hp, wp = model.config.grid_size
        everywhere = torch.ones(1, hp // 2 * wp, dtype=torch.bool, device=q.device)
        target_q = bot_msk.reshape(n, 3, *shape[-2:])
        valid_q = valid[:, :, None].expand(b, g_n, p_n, 1, *q.shape[-2:]).reshape(n, 1, *shape[-2:])
        total = total + model.loss(pred, target_q.to(pred.dtype), everywhere, valid_q.to(pred.dtype))
    if loss in ("iou", "both"):
        answers = pred.reshape(b, g_n, p_n, 3, *shape[-2:])
        known = (query_labels != ignore_index) & (query_labels >= 0)
        per_group = []
        for g, grp in enumerate(groups):
            index = _group_index(query_labels, grp)
            per_group.append(
                soft_iou_loss(
                    answers[:, g].flatten(0, 1),
                    index.repeat_interleave(p_n, 0),
                    known.repeat_interleave(p_n, 0),
                    len(grp),
                    temperature,
                )
            )
        total = total + torch.stack(per_group).mean()
    return total


def soft_iou_loss(answers: Tensor, index: Tensor, known: Tensor, num_labels: int, temperature: float = 16.0) -> Tensor:
    """One minus the mean soft IoU of labels 1..K over a batch of painted answers.

    The answer is decoded as :func:`seggpt.coloring.decode` does, but softly: pixel ``x`` belongs to palette colour
    ``k`` with probability ``softmax_k(-|x - colour_k| / temperature)`` (L2 distance in [0, 255] pixel units), so the
    hard decode is its arg-max and the loss follows the measured IoU as the temperature falls. Intersections and
    unions are summed over the whole batch before the ratio, as the FSS protocol accumulates them over a test set.

    Args:
        answers: (N, 3, h, w) predicted query halves in normalised space.
        index: (N, h, w) long target labels in 0..K (0 = background).
        known: (N, h, w) bool, False on ignored pixels.
    """
    colours = denormalize(answers.float())
    palette = torch.from_numpy(build_palette(num_labels)).to(colours.device, torch.float32)
    d2 = ((colours[:, None] - palette[None, :, :, None, None]) ** 2).sum(2)  # N K+1 h w
    prob = torch.softmax(-torch.sqrt(d2 + 1.0) / temperature, dim=1)[:, 1:]  # N K h w
    onehot = F.one_hot(index.clamp(0, num_labels), num_labels + 1)[..., 1:].permute(0, 3, 1, 2).float()
    w = known.unsqueeze(1).float()
    inter = (prob * onehot * w).sum((0, 2, 3))
    union = (prob * w).sum((0, 2, 3)) + (onehot * w).sum((0, 2, 3)) - inter
    return 1.0 - ((inter + 1.0) / (union + 1.0)).mean()


class _Subset:
    """Some items of a dataset, in the given order."""

    def __init__(self, data: SegmentationData, items: Sequence[int]) -> None:
        self.data, self.items = data, list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.data[self.items[index]]


def _split_items(n: int, fraction: float, seed: int, keep: Sequence[int] = ()) -> tuple[list[int], list[int]]:
    """(training, held-out) item indices: ``round(fraction * n)`` held out (at least 1), drawn with ``seed`` from
    the items other than ``keep`` (the examples a prompt starts from stay training items)."""
    k = max(1, round(fraction * n))
    kept = set(keep)
    free = [i for i in range(n) if i not in kept]
    if k >= n or k > len(free):
        raise ValueError(f"val_fraction {fraction} of {n} items leaves nothing to tune on; lower it or add data")
    held = np.random.default_rng([seed, 7]).choice(free, size=k, replace=False)
    held_set = {int(i) for i in held}
    return [i for i in range(n) if i not in held_set], sorted(held_set)


def validation_score(
    model: SegGPT,
    prompt_images: Tensor,
    prompt_masks: Tensor,
    images: Tensor,
    labels: Tensor,
    groups: list[tuple[int, ...]],
    task: str,
    ignore_index: int = 255,
    batch_size: int = 8,
) -> float:
    """Mean IoU (0-100) of the prompts' classes on images (N, 3, h, w) in [0, 255] with labels (N, h, w): for each of
    the G prompt groups, the IoU of each of its classes accumulated over every image (classes absent from both
    prediction and labels skipped), averaged."""
    labels = labels.long()
    ious = []
    for g, group in enumerate(groups):
        pred, _ = segment_tensors(model, prompt_images[g], prompt_masks[g], images, len(group), task, batch_size)
        index = _group_index(labels, group)
        skip = len(group) + 1
        index[(labels == ignore_index) | (labels < 0)] = skip
        inter, union = iou_counts(pred, index, len(group), ignore_index=skip)
        ious += [float(i) / float(u) * 100 for i, u in zip(inter[1:], union[1:], strict=True) if u > 0]
    return float(np.mean(ious)) if ious else 0.0


def _rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def _save_state(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp), overwrite=True)


class TuningStopped(KeyboardInterrupt):
    """Tuning stopped by Ctrl-C (or SIGTERM) after ``step`` steps, its state written to ``state`` (None: tuning
    without a state file); ``tune(..., resume=True)`` with the same state file continues it."""

    def __init__(self, step: int, state: Path | None) -> None:
        super().__init__(f"stopped at step {step}" + (f", the state in {state}" if state else ""))
        self.step, self.state = step, state


def tune(
    model: SegGPT,
    data: SegmentationData,
    classes: Sequence[int],
    task: str = "semantic",
    config: TuneConfig | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = False,
    callback: Callable[[int, float], None] | None = None,
    init_examples: Sequence[int] | None = None,
    info: dict | None = None,
) -> list[LearnedPrompt]:
    """Learn a prompt (or one per class) with the model frozen.

    Every step draws ``batch_size`` queries from ``data``, paints their targets with the prompt's palette, and
    takes an AdamW step on the prompt tensors only, with the training loss (smooth-L1 on the query half). The
    model's weights, ``requires_grad`` flags and train/eval mode are restored afterwards; its weights never change.
    With ``config.val_fraction`` > 0 a seeded share of ``data`` is held out, and the prompt (at the start, every
    ``config.val_every`` steps and at the end) with the best mean IoU on it is returned; its ``info`` records
    ``best_step``, ``val_score``, ``val_items`` and ``val_history``.

    Args:
        model: the frozen SegGPT (any device / dtype).
        data: items (image (3, h, w) in [0, 255], labels (h, w)) at ``model.config.image_size``.
        classes: dataset class ids to segment (K of them).
        task: "semantic" or "instance" (the type token the prompt is tuned with).
        config: the schedule and options (:class:`TuneConfig`).
        checkpoint: file for the tuning state (prompt, optimiser, step, RNG), written every
            ``config.checkpoint_every`` steps and at the end, atomically.
        resume: continue from ``checkpoint`` when it exists; the result equals an uninterrupted run. Ctrl-C (or
            SIGTERM), from the main thread, finishes the step, writes the state and raises :class:`TuningStopped`.
        progress: show a tqdm bar.
        callback: called as ``callback(step, loss)`` after every step (1-based step).
        init_examples: item indices of ``data`` to initialise from instead of random ones (``init="example"``);
            they are never held out for validation.
        info: extra provenance stored in each prompt's ``info``.

    Returns:
        One :class:`LearnedPrompt` in "multi" mode, K (one per class, binary) in "per-class" mode.
    """
    cfg = config or TuneConfig()
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {sorted(TASKS)}")
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty list of distinct ids, got {classes}")
    if any(c <= 0 or c == cfg.ignore_index for c in classes):
        raise ValueError(f"classes must be positive ids other than the ignore label ({cfg.ignore_index}): {classes}")
    if len(data) == 0:
        raise ValueError("the dataset is empty")
    image_size = model.config.image_size
    first_img, first_lab = data[0]
    if tuple(first_img.shape[-2:]) != image_size or tuple(first_lab.shape[-2:]) != image_size:
        raise ValueError(f"dataset items must be resized to the model's image size {image_size}")

    device = next(model.parameters()).device
    fingerprint = model_fingerprint(model)
    groups = _groups(classes, cfg.mode)
    held_out: list[int] = []
    full = data
    if cfg.val_fraction > 0:
        keep = [int(i) for i in init_examples] if init_examples is not None else []
        train_items, held_out = _split_items(len(data), cfg.val_fraction, cfg.seed, keep)
        data = _Subset(full, train_items)
    where = _class_index(data, classes)
    rng = np.random.default_rng(cfg.seed)
    if init_examples is not None and held_out:
        position = {item: k for k, item in enumerate(data.items)}
        init_examples = [position[int(i)] for i in init_examples]
    images, masks = _initial_prompt(data, groups, where, classes, cfg, image_size, rng, init_examples)
    prompt_images = nn.Parameter(images.to(device))
    prompt_masks = nn.Parameter(masks.to(device))
    learned = {"image": [prompt_images], "mask": [prompt_masks], "both": [prompt_images, prompt_masks]}[cfg.learn]
    opt = torch.optim.AdamW(learned, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    step = 0
    run_key = {"fingerprint": fingerprint, "classes": classes, "task": task, "config": dataclasses.asdict(cfg)}
    # The held-out items, read once: (images, labels) for validation_score.
    val_data = None
    if held_out:
        val_data = (torch.stack([full[i][0] for i in held_out]).float(), torch.stack([full[i][1] for i in held_out]))
    best: dict[str, Any] = {}  # the best validated prompt so far: step, score, images, masks
    history: list[list[float]] = []  # [step, score] of every validation

    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{ckpt_path} is not a tuning checkpoint")
        if state["run"] != run_key:
            diff = sorted(k for k in run_key if state["run"].get(k) != run_key[k])
            raise ValueError(
                f"{ckpt_path} belongs to a different tuning run (differs in {diff}); resume with the same model, "
                "classes, task and options, or start afresh without --resume"
            )
        with torch.no_grad():
            prompt_images.copy_(state["images"])
            prompt_masks.copy_(state["masks"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        step = int(state["step"])
        best = dict(state.get("best") or {})
        history = [list(h) for h in state.get("history", [])]
        log.info("resumed %s at step %d of %d", ckpt_path, step, cfg.steps)

    def save_state() -> None:
        if ckpt_path is None:
            return
        _save_state(
            ckpt_path,
            {
                "format": CHECKPOINT_FORMAT,
                "run": run_key,
                "step": step,
                "images": prompt_images.detach().cpu(),
                "masks": prompt_masks.detach().cpu(),
                "optimizer": opt.state_dict(),
                "rng": _rng_state(rng),
                "best": best,
                "history": history,
            },
        )

    def validate() -> None:
        if val_data is None or (history and history[-1][0] == step):
            return
        score = validation_score(
            model,
            prompt_images.detach(),
            prompt_masks.detach(),
            *val_data,
            groups,
            task,
            cfg.ignore_index,
            cfg.batch_size,
        )
        history.append([step, score])
        if not best or score > best["score"]:
            best.update(
                step=step,
                score=score,
                images=prompt_images.detach().cpu().clone(),
                masks=prompt_masks.detach().cpu().clone(),
            )

    lo, hi = _pixel_bounds(device)
    was_training = model.training
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.eval()
    model.requires_grad_(False)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="tune", unit="step")
    last_loss = float("nan")
    with StopRequest() as stop:
        try:
            if step == 0:
                validate()
            while step < cfg.steps:
                q_img, q_lab = _sample_batch(data, where, cfg, rng)
                for group_ in opt.param_groups:
                    group_["lr"] = _lr_at(step, cfg)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                    loss = prompt_loss(
                        model,
                        prompt_images,
                        prompt_masks,
                        q_img.to(device),
                        q_lab.to(device),
                        groups,
                        task,
                        cfg.ignore_index,
                        cfg.foreground_weight,
                        cfg.loss,
                        cfg.iou_temperature,
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if cfg.clamp:
                    with torch.no_grad():
                        for p in learned:
                            p.copy_(torch.maximum(torch.minimum(p, hi), lo))
                step += 1
                last_loss = float(loss.detach())
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4f}")
                if step % cfg.val_every == 0 or step == cfg.steps:
                    validate()
                    if bar is not None and best:
                        bar.set_postfix(
                            loss=f"{last_loss:.4f}", val=f"{history[-1][1]:.1f}", best=f"{best['score']:.1f}"
                        )
                if callback is not None:
                    callback(step, last_loss)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    save_state()
                if stop.requested and step < cfg.steps:
                    save_state()
                    raise TuningStopped(step, ckpt_path)
            save_state()
        finally:
            if bar is not None:
                bar.close()
            for n, p in model.named_parameters():
                p.requires_grad_(flags[n])
            model.train(was_training)

    meta = {
        "steps": cfg.steps,
        "final_loss": last_loss,
        "init": cfg.init,
        "learn": cfg.learn,
        "mode": cfg.mode,
        "foreground_weight": cfg.foreground_weight,
        "loss": cfg.loss,
    }
    final_images, final_masks = prompt_images.detach(), prompt_masks.detach()
    if best:
        final_images, final_masks = best["images"], best["masks"]
        meta.update(
            best_step=int(best["step"]),
            val_score=float(best["score"]),
            val_items=[int(i) for i in held_out],
            val_history=[[int(a), float(b)] for a, b in history],
        )
    meta.update(info or {})
    return [
        LearnedPrompt(
            images=final_images[g].cpu().clone(),
            masks=final_masks[g].cpu().clone(),
            task=task,
            classes=group,
            fingerprint=fingerprint,
            model_config=model.config.to_dict(),
            info=meta,
        )
        for g, group in enumerate(groups)
    ]


# Segmenting with prompt tensors (evaluation without the image-level predictor) -------------------------------
@torch.no_grad()
def segment_tensors(
    model: SegGPT,
    prompt_images: Tensor,
    prompt_masks: Tensor,
    queries: Tensor,
    num_labels: int,
    task: str = "semantic",
    batch_size: int = 8,
) -> tuple[Tensor, Tensor]:
    """Segment queries with (P, 3, h, w) prompt tensors, P used together in a feature ensemble.

    Args:
        prompt_images, prompt_masks: (P, 3, h, w) normalised (real examples or a learned prompt).
        queries: (B, 3, h, w) in [0, 255] at the model's image size.
        num_labels: K; the answer is decoded with ``build_palette(K)``.

    Returns:
        labels (B, h, w) long in 0..K, and the painted answers (B, 3, h, w) in [0, 255].
    """
    p_n = prompt_images.shape[0]
    param = next(model.parameters())
    palette = torch.from_numpy(build_palette(num_labels)).to(param.device)
    pi, pm = prompt_images.to(param.device, param.dtype), prompt_masks.to(param.device, param.dtype)
    labels, painted = [], []
    for s in range(0, queries.shape[0], batch_size):
        q = normalize(queries[s : s + batch_size]).to(param.device, param.dtype)
        b = q.shape[0]
        shape = (b, p_n, *pi.shape[1:])
        images = torch.cat([pi.expand(shape), q[:, None].expand(shape)], dim=-2).flatten(0, 1)
        # The placeholder under the mask token is a copy of the example mask, as in the released code.
        masks = torch.cat([pm.expand(shape), pm.expand(shape)], dim=-2).flatten(0, 1)
        seg_type = torch.full((b * p_n,), TASKS[task], dtype=torch.long, device=param.device)
        out = model(
            images,
            masks,
            model.query_mask(param.device),
            seg_type,
            feature_ensemble=p_n > 1,
            num_prompts=p_n,
            query_only=True,
        )
        out = denormalize(out[::p_n].float())  # entry 0 of each group of P
        lab, _ = decode(out.permute(0, 2, 3, 1), palette)
        labels.append(lab.cpu())
        painted.append(out.cpu())
    return torch.cat(labels), torch.cat(painted)


def segment_per_class(model: SegGPT, prompts: Sequence[LearnedPrompt], queries: Tensor, batch_size: int = 8) -> Tensor:
    """Merge K binary per-class prompts into one label map per query: (B, h, w) long in 0..K.

    Each prompt paints its class white; a pixel takes the class whose answer is brightest there, if that answer is
    closer to white than to black (mean channel > 127.5), else background.
    """
    for p in prompts:
        p.check_model(model)
        if p.num_labels != 1:
            raise ValueError("segment_per_class takes binary (one-class) prompts; use segment_tensors for a multi one")
    strength = []
    for p in prompts:
        _, painted = segment_tensors(model, p.images, p.masks, queries, 1, p.task, batch_size)
        strength.append(painted.mean(1))  # B h w in [0, 255]
    s = torch.stack(strength, 1)  # B K h w
    best, k = s.max(1)
    return torch.where(best > 127.5, k + 1, torch.zeros_like(k))


def iou_counts(pred: Tensor, target: Tensor, num_labels: int, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Per-label intersection and union counts (K + 1,) of label maps, ignoring ``ignore_index`` pixels."""
    keep = target != ignore_index
    p, t = pred[keep].long(), target[keep].long()
    inter = torch.bincount(t[p == t], minlength=num_labels + 1)[: num_labels + 1]
    area_p = torch.bincount(p, minlength=num_labels + 1)[: num_labels + 1]
    area_t = torch.bincount(t.clamp(max=num_labels), minlength=num_labels + 1)[: num_labels + 1]
    return inter, area_p + area_t - inter
