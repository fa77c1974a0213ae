"""Attribute supervision: an auxiliary loss that teaches the encoder what SynthContext objects are made of.

In-context segmentation of a category needs features that tell its value apart from the distractors'. The
in-context loss alone teaches a small model colour but hardly shape or texture (a linear probe on its features,
``probe_attributes.py``). SynthContext knows every pixel's shape, texture and colour, so a run can add a dense
classification loss on the encoder's taps (the decoder's input): one linear head per attribute, each object pixel
classified as one of the *training* values (background and procedural random shapes are ignored; held-out values
are never drawn). The head lives only in the trainer: the model that is saved is plain SegGPT.

Each step draws its own batch of semantic in-context samples (two scenes of one category, built exactly like a
training sample) with their attribute maps: a pure function of (seed, step), so resume stays exact. The samples
also add their in-context loss to the step's, weighted like any other sample.

It plugs into the package's trainer as an extra loss (``seggpt.train.extra_loss``): :func:`register` names it
``attributes``, and ``train.py`` (beside this file) is ``seggpt train`` with it registered:

    python projects/synthcontext/scripts/train.py projects/synthcontext/configs/embedded_attributes.yaml

with ``extra_loss: {name: attributes, weight: 0.5, batch_size: 8}`` in the config. ``pretrain_branch.py`` trains a
conv branch on the same attribute maps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seggpt.data import synth
from seggpt.data.masking import MaskingConfig
from seggpt.data.mixture import collate
from seggpt.data.pairs import Pair, build_sample
from seggpt.modeling import SegGPT
from seggpt.train import register_extra_loss

IGNORE = -1
# Classes per attribute: the training values in vocabulary order. Only object pixels are classified: on
# background pixels the loss would mostly teach what the in-context loss already does (object or not), and
# with a few percent of the pixels on objects it drowned the shape signal (measured: a head trained so
# classified 3% of object pixels to the right shape of 20).
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": synth.TRAIN_SHAPES,
    "texture": synth.TRAIN_TEXTURES,
    "colour": synth.COLOURS,
}


class AttributeHead(nn.Module):
    """Linear per-pixel classifiers on the decoder taps: (B, Hp, Wp, C * taps) -> {attribute: (B, K, H, W)}."""

    def __init__(self, in_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.sizes = {a: len(v) for a, v in ATTRIBUTE_VALUES.items()}
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, patch_size * patch_size * sum(self.sizes.values()))

    def forward(self, taps: list[Tensor]) -> dict[str, Tensor]:
        h = self.proj(self.norm(torch.cat(taps, dim=-1).float()))
        b, hp, wp, _ = h.shape
        p, k = self.patch_size, sum(self.sizes.values())
        h = h.reshape(b, hp, wp, p, p, k).permute(0, 5, 1, 3, 2, 4).reshape(b, k, hp * p, wp * p)
        return dict(zip(self.sizes, h.split(list(self.sizes.values()), dim=1), strict=True))


def attribute_loss(logits: dict[str, Tensor], labels: Tensor) -> Tensor:
    """Pixel cross-entropy averaged per sample over its known pixels, then over samples and attributes.

    ``labels``: (B, 3, H, W) long, IGNORE where unknown. Per-sample normalisation (as the in-context loss) makes
    the gradient of a batch independent of how it is split over processes and accumulation steps.
    """
    losses = []
    for i, a in enumerate(ATTRIBUTE_VALUES):
        target = labels[:, i]
        known = (target != IGNORE).float()
        ce = F.cross_entropy(logits[a].float(), target.clamp(min=0), reduction="none")
        losses.append(((ce * known).sum((1, 2)) / known.sum((1, 2)).clamp(min=1)).mean())
    return torch.stack(losses).mean()


def _lookup(value: str, attribute: str) -> int:
    values = ATTRIBUTE_VALUES[attribute]
    return values.index(value) if value in values else IGNORE


def attribute_maps(scene: synth.Scene, instances: np.ndarray) -> np.ndarray:
    """(3, H, W) int64 class maps (shape, texture, colour) of a rendered scene from its instance labels;
    IGNORE on background and on values that are not training classes."""
    lut = np.full((3, len(scene.objects) + 1), IGNORE, np.int64)  # column 0: background
    for i, obj in enumerate(scene.objects):
        for j, a in enumerate(ATTRIBUTE_VALUES):
            lut[j, i + 1] = _lookup(obj.attribute(a), a)
    return lut[:, instances]


def attribute_sample(
    rng: np.random.Generator, image_size: tuple[int, int], patch_size: int, masking: MaskingConfig
) -> dict[str, Tensor]:
    """One semantic training sample (two scenes of one training category) plus ``attributes`` (3, 2H, W)."""
    vocab = synth.vocabulary("train")
    attribute = synth._category_kind(rng, vocab, None)
    value = vocab.draw(rng, attribute, category=True)
    images, classes, attrs = [], [], []
    for _ in range(2):
        image, mask, scene, _, inst = synth.category_image_scene(rng, image_size, attribute, value, "train")
        images.append(image)
        classes.append(mask.astype(np.int32))
        attrs.append(attribute_maps(scene, inst))
    pair = Pair(images[0], classes[0], images[1], classes[1], synth.SEMANTIC, False, {"source": "attributes"})
    sample = build_sample(pair, rng, image_size, patch_size, masking)
    sample["attributes"] = torch.from_numpy(np.concatenate(attrs, axis=1))
    return sample


def attribute_batch(
    seed: int, step: int, n: int, image_size: tuple[int, int], patch_size: int, masking: MaskingConfig
) -> dict[str, Tensor]:
    """The ``n`` attribute samples of optimiser step ``step`` (all processes): a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step, 0xA77])
    return collate([attribute_sample(rng, image_size, patch_size, masking) for _ in range(n)])


class AttributeLoss:
    """The attribute loss as the trainer's extra loss (``seggpt.train.ExtraLoss``): an :class:`AttributeHead` on
    the model's taps, :func:`attribute_batch` samples, :func:`attribute_loss`."""

    def head(self, model: SegGPT) -> AttributeHead:
        cfg = model.config
        return AttributeHead(cfg.embed_dim * len(cfg.out_indices), cfg.patch_size)

    def samples(
        self, seed: int, step: int, n: int, image_size: tuple[int, int], patch_size: int, masking: MaskingConfig
    ) -> tuple[dict[str, Tensor], Tensor]:
        batch = attribute_batch(seed, step, n, image_size, patch_size, masking)
        return batch, batch.pop("attributes")

    def loss(self, out: dict[str, Tensor], labels: Tensor) -> Tensor:
        return attribute_loss(out, labels)


def register() -> None:
    """Let configs name this loss: ``extra_loss: {name: attributes, weight: ..., batch_size: ...}``."""
    register_extra_loss("attributes", AttributeLoss())
