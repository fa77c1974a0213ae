"""Segmenting with learned prompts: through the predictor (images, per-class prompts, video) and with prompt
tensors (evaluation and validation without the image-level predictor)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seggpt.coloring import build_palette, decode
from seggpt.modeling import SegGPT
from seggpt.transforms import denormalize, normalize
from seggpt.tuning.prompt import TASKS, LearnedPrompt, load_prompt_into


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
