"""Pretraining a conv branch on SynthContext attributes, before it joins a SegGPT.

A ViT of the embedded model's size trained from scratch does not learn what shape an object has: on single
objects at 64 px, one trained to name the shape (20 classes) was still at chance after 40 k samples, where a small
CNN reached 71% on the same data (``shape_learnability.py``; docs/embedded-model-history.md). So a
:class:`seggpt.modeling.layers.ConvBranch` (``SegGPTConfig.branch_channels``) is first trained alone to classify
every object pixel by shape, texture and colour (SynthContext knows them; ``attributes.py`` makes the maps), then
loaded into the model with ``model.branch_init`` in a training config. Its output conv is not pretrained: it starts
at zero in the model, so the model begins exactly where it was and in-context training decides how much of the
branch to use.

    python projects/synthcontext/scripts/pretrain_branch.py --out runs/branch.safetensors [--steps N]

writes the file; the package's trainer reads it (``seggpt.train.trainer.load_branch``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from attributes import ATTRIBUTE_VALUES, IGNORE, attribute_loss, attribute_maps
from torch import Tensor, nn

from seggpt import transforms
from seggpt.data import synth
from seggpt.io import atomic_write
from seggpt.modeling.layers import ConvBranch
from seggpt.train.trainer import BRANCH_FORMAT


@dataclass
class BranchPretrainConfig:
    channels: tuple[int, ...] = (32, 64, 128)
    depth: int = 2
    image_size: int = 64
    # Scenes rendered up front and drawn from with replacement (40 000 at 64 px: ~40 s on two cores, 1 GB).
    pool: int = 40_000
    steps: int = 3456
    batch_size: int = 64
    lr: float = 2e-3  # constant after the warmup
    warmup_steps: int = 100
    weight_decay: float = 0.05
    seed: int = 777
    threads: int = 2
    precision: str = "bf16"  # "bf16" | "fp32"

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive ints, got {self.channels}")
        if min(self.depth, self.steps, self.batch_size, self.pool) < 1:
            got = f"{self.depth}, {self.steps}, {self.batch_size}, {self.pool}"
            raise ValueError(f"depth, steps, batch_size and pool must be >= 1, got {got}")
        if self.image_size % 2 ** len(self.channels):
            raise ValueError(f"image_size {self.image_size} must be a multiple of {2 ** len(self.channels)}")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be 'bf16' or 'fp32', got {self.precision!r}")


class BranchClassifier(nn.Module):
    """The branch's last stage -> per-pixel logits of every attribute (a 1x1 conv, upsampled to the image)."""

    def __init__(self, channels: tuple[int, ...], depth: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.branch = ConvBranch(3, channels, depth, 1, eps)
        self.sizes = {a: len(v) for a, v in ATTRIBUTE_VALUES.items()}
        self.head = nn.Conv2d(channels[-1], sum(self.sizes.values()), kernel_size=1)
        self.branch.reset_parameters()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.head(self.branch.features(x))
        h = F.interpolate(h.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return dict(zip(self.sizes, h.split(list(self.sizes.values()), dim=1), strict=True))


def attribute_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A training scene of a random category: image (H, W, 3) uint8 and its (3, H, W) attribute maps."""
    vocab = synth.vocabulary("train")
    attribute = synth._category_kind(rng, vocab, None)
    value = vocab.draw(rng, attribute, category=True)
    image, _, scene, _, inst = synth.category_image_scene(rng, size, attribute, value, "train")
    return image, attribute_maps(scene, inst)


def normalize(images: Tensor) -> Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float, normalised as the model's inputs."""
    return transforms.normalize(images.permute(0, 3, 1, 2))


def _scene(args: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, index, size = args
    image, maps = attribute_scene(np.random.default_rng([seed, index]), size)
    return image, maps.astype(np.int8)


def render_pool(seed: int, start: int, count: int, size: int, workers: int = 2) -> tuple[Tensor, Tensor]:
    """Scenes ``start`` .. ``start + count - 1``, scene i drawn from ``default_rng([seed, i])`` (the same on every
    machine), rendered by ``workers`` processes. Images (N, H, W, 3) uint8, attribute maps (N, 3, H, W) int8."""
    jobs = [(seed, i, size) for i in range(start, start + count)]
    if workers > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(workers) as pool:
            items = pool.map(_scene, jobs, chunksize=256)
    else:
        items = [_scene(j) for j in jobs]
    return torch.from_numpy(np.stack([a for a, _ in items])), torch.from_numpy(np.stack([b for _, b in items]))


@torch.no_grad()
def accuracy(model: BranchClassifier, images: Tensor, labels: Tensor) -> dict[str, float]:
    """Fraction of labelled (object) pixels classified right, per attribute."""
    logits = model(normalize(images))
    out = {}
    for i, a in enumerate(ATTRIBUTE_VALUES):
        known = labels[:, i] != IGNORE
        right = (logits[a].argmax(1) == labels[:, i]) & known
        out[a] = float(right.sum()) / max(int(known.sum()), 1)
    return out


def pretrain_branch(cfg: BranchPretrainConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> dict:
    """Train a branch on attribute maps and save it (safetensors, atomic). Returns the held-out accuracies."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    torch.set_num_threads(cfg.threads)
    images, maps = render_pool(cfg.seed, 0, cfg.pool, cfg.image_size, workers=min(2, cfg.threads))
    # New scenes for the accuracy at the end.
    test_x, test_y = render_pool(cfg.seed, 10**6, 512, cfg.image_size, workers=min(2, cfg.threads))
    torch.manual_seed(cfg.seed)
    model = BranchClassifier(cfg.channels, cfg.depth)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=cfg.precision == "bf16")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc="branch", unit="step", disable=None)
    t0 = time.time()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
        i = torch.randint(0, cfg.pool, (cfg.batch_size,))
        with autocast:
            loss = attribute_loss(model(normalize(images[i])), maps[i].long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    model.eval()
    with autocast:
        acc = accuracy(model, test_x, test_y.long())
    stats = {"accuracy": acc, "seconds": round(time.time() - t0, 1), "config": asdict(cfg)}
    meta = {"format": BRANCH_FORMAT, "channels": json.dumps(list(cfg.channels)), "depth": str(cfg.depth)}
    meta["stats"] = json.dumps(stats)
    tensors = {k: v.contiguous() for k, v in model.branch.stages.state_dict().items()}
    atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata=meta), overwrite)
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pretrain_branch.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="safetensors file to write")
    ap.add_argument("--channels", default="32,64,128", help="channels of each stride-2 stage (default 32,64,128)")
    ap.add_argument("--depth", type=int, default=2, help="convs per stage (default 2)")
    ap.add_argument("--steps", type=int, default=BranchPretrainConfig.steps)
    ap.add_argument("--pool", type=int, default=BranchPretrainConfig.pool, help="scenes rendered up front")
    ap.add_argument("--batch-size", type=int, default=BranchPretrainConfig.batch_size)
    ap.add_argument("--image-size", type=int, default=BranchPretrainConfig.image_size)
    ap.add_argument("--seed", type=int, default=BranchPretrainConfig.seed)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    cfg = BranchPretrainConfig(
        channels=tuple(int(c) for c in a.channels.split(",")),
        depth=a.depth,
        steps=a.steps,
        pool=a.pool,
        batch_size=a.batch_size,
        image_size=a.image_size,
        seed=a.seed,
        threads=a.threads,
    )
    stats = pretrain_branch(cfg, a.out, overwrite=a.overwrite)
    acc = ", ".join(f"{k} {v:.1%}" for k, v in stats["accuracy"].items())
    print(f"wrote {a.out}: pixel accuracy on new scenes: {acc} ({stats['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
