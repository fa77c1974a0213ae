"""The learned prompt: a tuned example, the fingerprint of the weights it belongs to, and its file.

A learned prompt is stored as one small safetensors file: the (P, 3, h, w) example image and mask tensors in the
model's normalised space, plus JSON metadata (task, the dataset classes behind each palette colour, the model
fingerprint). It only makes sense for the exact weights it was tuned for, so loading it into another model is
refused (:class:`PromptMismatchError`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seggpt.coloring import build_palette
from seggpt.io import atomic_write
from seggpt.modeling import INSTANCE, SEMANTIC, SegGPT
from seggpt.transforms import denormalize

PROMPT_FORMAT = "seggpt-prompt-v1"
TASKS = {"semantic": SEMANTIC, "instance": INSTANCE}
# Elements read from each tensor for the fingerprint (see model_fingerprint).
_FINGERPRINT_SAMPLES = 4096


class PromptMismatchError(ValueError):
    """A learned prompt used with a model other than the one it was tuned for."""


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
