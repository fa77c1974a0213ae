"""The tuning loop: :func:`tune` learns a prompt (or one per class) with the model frozen, resumable, choosing
the step on held-out items when asked to."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from seggpt.io import atomic_write
from seggpt.modeling import SegGPT
from seggpt.stopping import StopRequest
from seggpt.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from seggpt.tuning.data import SegmentationData, _class_index, _split_items, _Subset
from seggpt.tuning.loss import _group_index, _paint_targets, prompt_loss
from seggpt.tuning.prompt import TASKS, LearnedPrompt, model_fingerprint
from seggpt.tuning.segment import iou_counts, segment_tensors

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "seggpt-tune-state-v1"
MODES = ("multi", "per-class")
LOSSES = ("canvas", "iou", "both")


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
