"""The SegGPT trainer: AdamW + warm-up/cosine + layer-wise lr decay, bf16 autocast, DDP/FSDP, exact resume.

    from seggpt.train import load_config, train
    result = train(load_config("configs/tiny.yaml", ["steps=200"]))

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` + ``metrics.png``,
``checkpoints/step_XXXXXXX.pt`` (model, optimiser, schedule, sampler position and every RNG state, each written
atomically) and, at the end, ``model.safetensors`` (``save_native``; ``seggpt.load_model`` reads it).

Exact resume: sample k of the run is a pure function of (seed, k) (see :mod:`seggpt.data.mixture`), and the
checkpoint restores everything else that is random, so an interrupted and resumed run lands on the same
parameters as an uninterrupted one (bit-exact on the CPU).

Loss: the model's smooth-L1 loss, normalised per sample and then averaged over the batch, so that a batch
split over ranks or accumulation steps gives the same gradient as the whole batch at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from seggpt.checkpoint import EMBEDDED_WEIGHTS, read_checkpoint, save_native, scale_resolution, set_image_size
from seggpt.config import preset
from seggpt.data.base import DataError, Source
from seggpt.data.mixture import Mixture, StepSampler, TrainingSamples, collate
from seggpt.devices import cpu_has_bf16
from seggpt.modeling import SegGPT
from seggpt.modeling.seggpt import with_fine_prior
from seggpt.stopping import StopRequest
from seggpt.train import distributed as D
from seggpt.train.config import TrainConfig
from seggpt.train.extra_loss import WithHead, get_extra_loss
from seggpt.train.metrics import append_metrics, plot_metrics, truncate_metrics
from seggpt.train.optim import WarmupCosine, param_groups

log = logging.getLogger(__name__)

_CKPT = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_name(step: int) -> str:
    """The file name of the checkpoint written after ``step`` optimiser steps (in the run's ``checkpoints/``)."""
    return f"step_{step:07d}.pt"


# The metadata format of a conv branch's weights (model.branch_init; see load_branch).
BRANCH_FORMAT = "seggpt-conv-branch"


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model_path: Path | None  # model.safetensors, None when the run stopped early (with a checkpoint)
    step: int  # optimiser steps done
    last_loss: float | None
    skipped: int  # bad samples skipped on this rank
    interrupted: bool = False  # stopped early by Ctrl-C (SIGINT) or SIGTERM
    # The trained model (this rank's copy; with FSDP only the local shards are meaningful), in train mode.
    model: SegGPT | None = field(default=None, repr=False, compare=False)


# Loss ----------------------------------------------------------------------------------------------------
def per_sample_loss(
    pred: Tensor, target: Tensor, bool_masked_pos: Tensor, valid: Tensor | None, patch_size: int, beta: float = 0.01
) -> Tensor:
    """Smooth-L1 (the paper's beta 0.01) over masked-patch pixels (times ``valid``), normalised per sample: (B,).

    For one sample it equals ``SegGPT.loss``; over a batch it weights every sample equally, which keeps the
    gradient of a global batch independent of how it is split across ranks and accumulation steps.
    """
    b, c, h, w = pred.shape
    p = patch_size
    m = bool_masked_pos.reshape(b, 1, h // p, w // p).float()
    m = m.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)
    if valid is not None:
        m = m * valid.float()
    m = m.expand(b, c, h, w)
    loss = F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=beta)
    return (loss * m).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2, 3)) + 1e-2)


# Model ---------------------------------------------------------------------------------------------------
def load_branch(model: SegGPT, path: str | os.PathLike) -> None:
    """Load pretrained conv-branch stages into ``model.patch_embed.branch`` (its output conv is left as it is).

    The file is safetensors: the tensors of ``branch.stages`` and metadata ``format`` (:data:`BRANCH_FORMAT`),
    ``channels`` (a JSON list) and ``depth``, which must be the model's ``branch_channels`` and ``branch_depth``.
    """
    from safetensors import safe_open

    branch = model.patch_embed.branch
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:
        raise ValueError(f"cannot read conv-branch weights from {path}: {e}") from None
    if meta.get("format") != BRANCH_FORMAT:
        raise ValueError(
            f"{path} is not a conv-branch file (safetensors of the branch's stages, format {BRANCH_FORMAT!r}, "
            "channels and depth in its metadata)"
        )
    want = (tuple(json.loads(meta["channels"])), int(meta["depth"]))
    cfg = model.config
    have = (tuple(cfg.branch_channels), cfg.branch_depth)
    if want != have:
        raise ValueError(
            f"{path} holds a branch of channels {want[0]}, depth {want[1]}; the model's is {have[0]}, depth {have[1]}"
        )
    branch.stages.load_state_dict({k: v.to(branch.out.weight.dtype) for k, v in tensors.items()})


def _with_branch_init(model: SegGPT, path: str | None) -> SegGPT:
    if path is not None:
        if model.patch_embed.branch is None:
            msg = "model.branch_init is set but the model has no conv branch (set model.overrides.branch_channels)"
            raise ValueError(msg)
        load_branch(model, path)
    return model


def _freeze(model: SegGPT, prefixes: list[str]) -> SegGPT:
    for prefix in prefixes:
        params = [p for n, p in model.named_parameters() if n.startswith(prefix)]
        if not params:
            raise ValueError(f"model.freeze: {prefix!r} is the start of no parameter name of this model")
        for p in params:
            p.requires_grad_(False)
    return model


def _with_image_encoder_init(model: SegGPT, weights: str | None) -> SegGPT:
    if model.image_encoder is not None and weights is not None:
        from seggpt.modeling.efficientnet import imagenet_state_dict

        state = imagenet_state_dict(None if weights == "imagenet" else weights)
        model.image_encoder.load_state_dict(state, strict=True)
    return model


def build_model(cfg: TrainConfig) -> SegGPT:
    """The model to train: a preset (random init), or ``init_from`` a checkpoint, with overrides."""
    return _freeze(_build_model(cfg), cfg.model.freeze)


def _build_model(cfg: TrainConfig) -> SegGPT:
    spec = cfg.model
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.overrides.items()}
    if spec.init_from is None:
        if spec.preset is None:
            raise ValueError("set model.preset (e.g. vit_tiny) or model.init_from (a checkpoint)")
        model = _with_image_encoder_init(SegGPT(preset(spec.preset, **overrides)), spec.image_encoder_weights)
        return _with_branch_init(model, spec.branch_init)
    # Every checkpoint as stored: the embedded model at 64x64 images, not at the size it runs at. Set
    # model.overrides.img_size to train at another size.
    state, config = read_checkpoint(EMBEDDED_WEIGHTS if spec.init_from == "embedded" else spec.init_from)
    state, config = scale_resolution(state, config, spec.scale_resolution)
    arch = preset(spec.preset, **overrides) if spec.preset else config.replace(**overrides)
    if arch.fine_prior and not config.fine_prior:
        # The correspondence prior starts switched off: its decoder inputs get zero weights.
        state = with_fine_prior(state)
    if arch.img_size != config.img_size and arch.patch_size == config.patch_size:
        # Another token grid: the relative position tables are resized (the position embedding is at run time).
        state, _ = set_image_size(state, config, arch.image_size)
    model = SegGPT(arch)
    own = model.state_dict()
    misshapen = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if misshapen and not spec.init_partial:
        shapes = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in misshapen[:4])
        raise ValueError(
            f"init_from {spec.init_from} does not fit the configured model: {len(misshapen)} tensor(s) of another "
            f"shape ({shapes}{', ...' if len(misshapen) > 4 else ''}; checkpoint vs model). Drop model.preset and "
            "model.overrides to take the checkpoint's architecture, or set model.init_partial=true to load only "
            "the tensors that fit (the rest start from scratch)"
        )
    if spec.init_partial:
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        log.warning("init_from %s: loaded %d of the model's %d tensors", spec.init_from, len(state), len(own))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A conv branch the checkpoint has not got starts at zero, or from pretrained weights.
    new_branch = [k for k in missing if k.startswith("patch_embed.branch.")]
    missing = [k for k in missing if k not in new_branch]
    _with_branch_init(model, spec.branch_init)
    if (missing or unexpected) and not spec.init_partial:
        raise ValueError(
            f"init_from {spec.init_from} does not fit the configured model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]} (drop model.preset to take the checkpoint's architecture, or set "
            "model.init_partial=true to load only what fits)"
        )
    return model


def build_sources(cfg: TrainConfig) -> tuple[list[Source], list[float]]:
    from seggpt.data.registry import build_source

    if not cfg.data.sources:
        raise ValueError("no data: set data.sources (a list of {type: ..., weight: ...}) or pass sources=")
    sources, weights = [], []
    for spec in cfg.data.sources:
        spec = dict(spec)
        weights.append(float(spec.get("weight", 1.0)))
        if "augment" not in spec and spec.get("type") not in ("synth", "real_pairs"):
            spec["augment"] = cfg.data.augment
        sources.append(build_source(spec))
    return sources, weights


# Checkpoints ---------------------------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    # Only tensors and plain Python values, so that a checkpoint loads with torch.load(weights_only=True) and
    # load_model can read its weights without running pickled code.
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 -- the legacy global state
    state = {
        "python": random.getstate(),
        "numpy": (str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    if isinstance(keys, torch.Tensor):  # checkpoints before weights_only-safe states held the ndarray itself
        keys = keys.numpy().astype(np.uint32)
    np.random.set_state((name, keys, *rest))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name))]
    return max(found)[1] if found else None


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact


def _model_and_optim_state(model, optimizer, info: D.DistInfo, kind: str) -> tuple[dict, dict]:
    inner = model.module if info.enabled and kind == "ddp" else model
    if isinstance(inner, WithHead):  # the checkpoint's "model" stays plain SegGPT
        return inner.model.state_dict(), optimizer.state_dict()
    if info.enabled and kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(model, optimizer, options=opts)
    inner = model.module if info.enabled and kind == "ddp" else model
    return inner.state_dict(), optimizer.state_dict()


def _load_model_and_optim_state(model, optimizer, msd: dict, osd: dict, info: D.DistInfo, kind: str) -> None:
    if info.enabled and kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=msd, optim_state_dict=osd,
                       options=StateDictOptions(full_state_dict=True))  # fmt: skip
        return
    inner = model.module if info.enabled and kind == "ddp" else model
    (inner.model if isinstance(inner, WithHead) else inner).load_state_dict(msd)
    optimizer.load_state_dict(osd)


# Training ------------------------------------------------------------------------------------------------
def train(
    config: TrainConfig,
    sources: Sequence[Source] | None = None,
    weights: Sequence[float] | None = None,
    progress: bool = False,
    time_limit: float | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train (or resume) a SegGPT model as ``config`` says; under torchrun every rank calls this.

    Args:
        config: the run's configuration.
        sources: Source objects to draw from instead of ``config.data.sources`` (for use from Python).
        weights: their mixture weights (default equal).
        progress: show a tqdm bar on rank 0.
        time_limit: seconds; stop cleanly with a checkpoint when exceeded (resume later continues).
        stop_after: stop (with a checkpoint) after this optimiser step, as if interrupted there.

    Ctrl-C (SIGINT) or SIGTERM, when called from the main thread, stops the run after the step it is on, with a
    checkpoint (the result says ``interrupted``); a second one raises KeyboardInterrupt at once.

    Returns:
        A :class:`TrainResult`.
    """
    cfg = config
    info = D.setup(cfg.device)
    threads = torch.get_num_threads()
    try:
        with StopRequest() as stop:
            return _train(cfg, info, sources, weights, progress, time_limit, stop_after, stop)
    finally:
        torch.set_num_threads(threads)  # `threads` applies to this run only
        D.teardown(info)


def _train(cfg, info, sources, weights, progress, time_limit, stop_after, stop: StopRequest) -> TrainResult:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(cfg.run_dir)
    ckpt_dir = run / "checkpoints"
    if info.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    D.barrier(info)
    if cfg.batch_size % (info.world * cfg.grad_accum):
        raise ValueError(
            f"batch_size {cfg.batch_size} must be divisible by processes x grad_accum = {info.world} x {cfg.grad_accum}"
        )
    micro = cfg.batch_size // (info.world * cfg.grad_accum)

    # Model: identical initialisation on every rank (DDP also broadcasts rank 0's parameters).
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(info.device)
    model.grad_checkpointing = cfg.model.grad_checkpointing
    model.train()
    mcfg = model.config
    head = None
    extra = cfg.extra_loss
    extra_loss = get_extra_loss(extra.name) if extra.name is not None else None
    if extra_loss is not None:
        if extra.batch_size % (info.world * cfg.grad_accum):
            raise ValueError(
                f"extra_loss.batch_size {extra.batch_size} must be divisible by processes x grad_accum = "
                f"{info.world} x {cfg.grad_accum}"
            )
        head = extra_loss.head(model).to(info.device)
        head.train()
    extra_micro = extra.batch_size // (info.world * cfg.grad_accum) if head is not None else 0
    wrapped = D.wrap(model if head is None else WithHead(model, head), info, cfg.distributed)
    fsdp = info.enabled and cfg.distributed == "fsdp"
    # Groups after wrapping: FSDP replaces the parameters by sharded ones (DDP keeps them).
    groups = param_groups(model, cfg.optim.weight_decay, cfg.optim.layer_decay, mcfg.depth, cfg.optim.lr_scales)
    for g in groups:
        g.pop("names")
    if head is not None:  # the head learns at the top layer's rate (scale 1); its weights decay, norm and bias not
        for decay in (True, False):
            params = [p for p in head.parameters() if (p.ndim > 1) == decay]
            groups.append({"params": params, "weight_decay": cfg.optim.weight_decay if decay else 0.0, "lr_scale": 1.0})
    fused = info.device.type == "cuda" and not fsdp
    optimizer = torch.optim.AdamW(
        groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps, fused=fused or None
    )
    schedule = WarmupCosine(cfg.optim.lr, cfg.steps, cfg.optim.warmup_steps, cfg.optim.min_lr)

    # Resume.
    start = 0
    skipped_total = 0
    ckpt = latest_checkpoint(run) if cfg.resume else None
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if (head is not None) != ("extra_head" in state):
            had = "with" if "extra_head" in state else "without"
            raise ValueError(f"{ckpt} was written {had} an extra_loss; keep that setting or use a new run_dir")
        _load_model_and_optim_state(wrapped, optimizer, state["model"], state["optimizer"], info, cfg.distributed)
        if head is not None:
            head.load_state_dict(state["extra_head"])
        start = int(state["step"])
        skipped_total = int(state["sampler"].get("skipped", 0))
        if state["sampler"]["seed"] != cfg.seed or state["sampler"]["batch_size"] != cfg.batch_size:
            raise ValueError(f"{ckpt} was written with another seed or batch size; use a new run_dir")
        _set_rng_state(state["rng"][info.rank] if info.rank < len(state["rng"]) else state["rng"][0])
        log.info("resumed from %s at step %d", ckpt, start)
        if stop_after is not None and start >= stop_after:  # this stage of a recipe is done already
            log.info("step %d reached before --stop-after %d: nothing to train", start, stop_after)
            return TrainResult(run, None, start, None, skipped_total, model=model)
        if info.is_main:
            truncate_metrics(run / "metrics.jsonl", start)
    elif info.is_main:
        (run / "metrics.jsonl").unlink(missing_ok=True)
    if info.is_main:
        tmp = run / ".config.yaml.tmp"
        tmp.write_text(cfg.to_yaml())
        os.replace(tmp, run / "config.yaml")

    # Data.
    if sources is None:
        sources, w = build_sources(cfg)
        weights = weights or w
    mixture = Mixture(list(sources), weights)
    dataset = TrainingSamples(
        mixture,
        mcfg.image_size,
        mcfg.patch_size,
        cfg.data.masking,
        seed=cfg.seed,
        mix_prob=cfg.data.mix_prob,
        skip_bad=cfg.data.skip_bad_samples,
        num_samples=cfg.data.num_samples,
    )
    sampler = StepSampler(cfg.batch_size, info.rank, info.world, start_step=start, steps=cfg.steps)
    loader = DataLoader(
        dataset,
        batch_size=micro,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
        pin_memory=info.device.type == "cuda",
        persistent_workers=False,
        # Its own generator: creating the iterator would otherwise draw from the global torch RNG, which a
        # resumed run has just restored (drop path must see the same random stream as an uninterrupted run).
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    batches = iter(loader)

    autocast = (
        torch.autocast(info.device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else contextlib.nullcontext()
    )
    if cfg.precision == "bf16" and info.device.type == "cpu" and not cpu_has_bf16():
        log.warning(
            "precision bf16 on a CPU without AVX512-BF16 or AMX: bf16 is emulated here, measured ten times slower "
            "than fp32 on an AVX2-only CPU; set precision: fp32 (precision=fp32 on the command line)"
        )
    bar = None
    if progress and info.is_main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)

    def save_checkpoint(step: int) -> None:
        msd, osd = _model_and_optim_state(wrapped, optimizer, info, cfg.distributed)
        rng = [None] * info.world
        if info.enabled:
            torch.distributed.all_gather_object(rng, _rng_state())
        else:
            rng = [_rng_state()]
        if info.is_main:
            state = {
                "model": msd,
                **({"extra_head": head.state_dict()} if head is not None else {}),
                "optimizer": osd,
                "scheduler": {**schedule.state_dict(), "step": step},
                "step": step,
                "sampler": {
                    "seed": cfg.seed,
                    "batch_size": cfg.batch_size,
                    "next_step": step,
                    "skipped": skipped_total,
                },
                "rng": rng,
                "config": cfg.to_dict(),
                "model_config": mcfg.to_dict(),
            }
            _save_atomic(state, ckpt_dir / checkpoint_name(step))
            old = sorted((int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _CKPT.match(p.name)))
            for _, p in old[: max(0, len(old) - cfg.keep_checkpoints)]:
                p.unlink(missing_ok=True)
            if cfg.plot:
                plot_metrics(run / "metrics.jsonl", run / "metrics.png")
        D.barrier(info)

    t0 = time.perf_counter()
    t_log = t0
    loss_acc = torch.zeros((), device=info.device)
    extra_acc = torch.zeros((), device=info.device)
    n_acc = 0
    last_loss: float | None = None
    step = start
    stopped_early = interrupted = False
    for step in range(start, cfg.steps):
        lr = schedule.apply(optimizer, step)
        if head is not None:  # every process draws the step's samples and takes its share, like the main batch
            extra_batch, extra_labels = extra_loss.samples(
                cfg.seed, step, extra.batch_size, mcfg.image_size, mcfg.patch_size, cfg.data.masking
            )
            share = extra.batch_size // info.world
            mine = slice(info.rank * share, (info.rank + 1) * share)
            extra_batch, extra_labels = {key: v[mine] for key, v in extra_batch.items()}, extra_labels[mine]
        for k in range(cfg.grad_accum):
            try:
                batch = next(batches)
            except DataError as e:
                raise DataError(f"{e} (set data.skip_bad_samples=true to skip bad samples)") from e
            batch = {key: v.to(info.device, non_blocking=True) for key, v in batch.items()}
            skipped_total += int(batch.pop("skipped").sum())
            last = k == cfg.grad_accum - 1
            if fsdp:
                wrapped.set_requires_gradient_sync(last)
            sync = info.enabled and not last and not fsdp
            if head is not None:  # this micro-step's extra samples ride at the end of its batch
                part = slice(k * extra_micro, (k + 1) * extra_micro)
                labels = extra_labels[part].to(info.device)
                batch = {key: torch.cat([v, extra_batch[key][part].to(info.device)]) for key, v in batch.items()}
            with wrapped.no_sync() if sync else contextlib.nullcontext(), autocast:
                args = (batch["images"], batch["masks"], batch["bool_masked_pos"], batch["seg_type"])
                if head is None:
                    pred = wrapped(*args)
                else:
                    pred, out = wrapped(*args, extra_micro)
                loss = per_sample_loss(
                    pred, batch["masks"], batch["bool_masked_pos"], batch["valid"], mcfg.patch_size, cfg.loss_beta
                )
                loss = loss.mean() / cfg.grad_accum
                total = loss
                if head is not None:
                    e_loss = extra_loss.loss(out, labels) / cfg.grad_accum
                    total = loss + extra.weight * e_loss
                    extra_acc += e_loss.detach()
            total.backward()
            loss_acc += loss.detach()
        n_acc += 1
        if cfg.optim.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1

        if cfg.data.max_skipped is not None and skipped_total > cfg.data.max_skipped:
            raise DataError(
                f"{skipped_total} bad samples skipped, more than data.max_skipped={cfg.data.max_skipped}; "
                "the log names the files"
            )
        if done % cfg.log_every == 0 or done == cfg.steps:
            mean_loss = float(D.all_mean(loss_acc / n_acc, info))
            mean_extra = float(D.all_mean(extra_acc / n_acc, info)) if head is not None else None
            now = time.perf_counter()
            if info.is_main:
                rec = {
                    "step": done,
                    "loss": mean_loss,
                    "lr": lr,
                    "samples_per_s": n_acc * cfg.batch_size / max(now - t_log, 1e-9),
                    "skipped": skipped_total,
                    "elapsed_s": now - t0,
                }
                if head is not None:
                    rec[f"{extra.name}_loss"] = mean_extra
                append_metrics(run / "metrics.jsonl", rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
            last_loss, loss_acc, n_acc, t_log = mean_loss, torch.zeros_like(loss_acc), 0, now
            extra_acc = torch.zeros_like(extra_acc)
        if bar is not None:
            bar.update(1)
        over_time = time_limit is not None and time.perf_counter() - t0 > time_limit
        # 1: out of time, 2: a stop was asked for (on any rank: all of them stop at the same step)
        reason = D.all_max(max(int(over_time), 2 * int(stop.requested)), info)
        early = done < cfg.steps and (reason > 0 or (stop_after is not None and done >= stop_after))
        if done % cfg.checkpoint_every == 0 or early or done == cfg.steps:
            save_checkpoint(done)
        if early:
            stopped_early, interrupted = True, reason == 2
            break
    if bar is not None:
        bar.close()

    model_path = None
    final_step = step + 1 if cfg.steps > start else start
    if not stopped_early:
        model_path = run / "model.safetensors"
        if info.enabled and cfg.distributed == "fsdp":
            msd, _ = _model_and_optim_state(wrapped, optimizer, info, cfg.distributed)
            if info.is_main:
                plain = SegGPT(mcfg)
                plain.load_state_dict(msd)
                save_native(plain, model_path, overwrite=True)
        elif info.is_main:
            save_native(model, model_path, overwrite=True, extra_metadata={"trained_steps": str(final_step)})
        if info.is_main and cfg.plot:
            plot_metrics(run / "metrics.jsonl", run / "metrics.png")
        D.barrier(info)
    return TrainResult(run, model_path, final_step, last_loss, skipped_total, interrupted, model)
