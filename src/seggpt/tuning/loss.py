"""The tuning loss: the queries' targets painted with a prompt's palette, and the loss of a batch through the
frozen model (the training loss on the query half, a soft IoU of the decoded answer, or both)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from seggpt.coloring import build_palette
from seggpt.modeling import SegGPT
from seggpt.transforms import denormalize, normalize
from seggpt.tuning.prompt import TASKS


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
