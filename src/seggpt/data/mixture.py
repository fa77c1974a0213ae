"""The mixture sampler: draws each training sample from one of several sources with fixed weights.

Every sample is a pure function of (seed, global sample index): its generator is
``np.random.default_rng([seed, index, attempt])``. So a run is reproducible, a resumed run sees exactly the
samples an uninterrupted one would, and ranks of a distributed run shard the global batch by index with no
shared state. Bad samples (a :class:`~seggpt.data.base.DataError`) can be skipped: the next attempt of the
same index draws a different pair, and a counter records how many were skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from seggpt.data.base import DataError, Pair, Source
from seggpt.data.masking import MaskingConfig
from seggpt.data.pairs import build_sample, stitch

log = logging.getLogger(__name__)

# The supplementary's dataset weights, keyed by our source type names (see configs/paper_vit_large.yaml).
PAPER_WEIGHTS = {
    "coco_instance": 0.22,
    "ade20k": 0.15,
    "coco_panoptic": 0.15,
    "cityscapes": 0.07,
    "coco_stuff": 0.07,
    "lip": 0.07,
    "voc": 0.07,
    "paco": 0.07,
    "aerial": 0.06,  # iSAID + loveDA
    "vessels": 0.06,  # CHASE_DB1, DRIVE, HRF, STARE
}


class Mixture:
    """Sources with sampling weights (normalised to sum 1). Itself a Source."""

    def __init__(self, sources: Sequence[Source], weights: Sequence[float] | None = None) -> None:
        if not sources:
            raise ValueError("a mixture needs at least one source")
        w = np.ones(len(sources)) if weights is None else np.asarray(weights, dtype=np.float64)
        if len(w) != len(sources) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"need one non-negative weight per source with a positive sum, got {list(w)}")
        self.sources = list(sources)
        self.weights = w / w.sum()
        self.name = "mixture(" + ",".join(s.name for s in self.sources) + ")"

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def choose(self, rng: np.random.Generator) -> Source:
        return self.sources[int(rng.choice(len(self.sources), p=self.weights))]

    def sample_pair(self, rng: np.random.Generator, size: tuple[int, int]) -> Pair:
        return self.choose(rng).sample_pair(rng, size)


class TrainingSamples(Dataset):
    """Map-style dataset over global sample indices: ``ds[k]`` is sample k of the run, deterministically.

    Args:
        mixture: where pairs come from.
        image_size: (h, w) of one image.
        patch_size: the model's patch size (for ``bool_masked_pos``).
        masking: patch masking recipe.
        seed: run seed.
        mix_prob: probability of mix-context stitching (two pairs of the same source side by side).
        skip_bad: skip samples that raise DataError (retry the index with a new draw) instead of raising.
        max_attempts: attempts per index before giving up even when skipping.
        num_samples: when set, a finite set of samples: index k is sample k % num_samples (same pair, colours
            and masking every epoch), e.g. to check that a model can overfit a handful of pairs.
    """

    def __init__(
        self,
        mixture: Mixture,
        image_size: tuple[int, int],
        patch_size: int,
        masking: MaskingConfig | None = None,
        seed: int = 0,
        mix_prob: float = 0.0,
        skip_bad: bool = True,
        max_attempts: int = 20,
        num_samples: int | None = None,
    ) -> None:
        self.mixture = mixture
        self.image_size = tuple(image_size)
        self.patch_size = patch_size
        self.masking = masking or MaskingConfig()
        self.seed = seed
        self.mix_prob = mix_prob
        self.skip_bad = skip_bad
        self.max_attempts = max_attempts
        self.num_samples = num_samples

    def __len__(self) -> int:
        return 2**62  # indices are unbounded; the sampler decides which are used

    def pair(self, index: int, attempt: int = 0) -> tuple[Pair, np.random.Generator]:
        rng = np.random.default_rng([self.seed, index, attempt])
        source = self.mixture.choose(rng)
        p = source.sample_pair(rng, self.image_size)
        if self.mix_prob > 0 and rng.random() < self.mix_prob:
            p = stitch(p, source.sample_pair(rng, self.image_size), rng, self.image_size)
        return p, rng

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if self.num_samples:
            index = index % self.num_samples
        for attempt in range(self.max_attempts):
            try:
                p, rng = self.pair(index, attempt)
                sample = build_sample(p, rng, self.image_size, self.patch_size, self.masking)
                sample["skipped"] = torch.tensor(attempt)
                return sample
            except DataError as e:
                if not self.skip_bad:
                    raise
                log.warning("skipping a bad sample (index %d, attempt %d): %s", index, attempt, e)
        raise DataError(f"{self.max_attempts} attempts in a row hit bad data at sample index {index}; see the log")


class StepSampler(Sampler[int]):
    """Global sample indices for one rank, step after step, from ``start_step`` on.

    Step s uses indices s * G .. s * G + G - 1 (G = global batch); rank r of N takes the r-th contiguous
    slice of G / N. One process with the same G therefore sees exactly the union of all ranks' samples.
    """

    def __init__(self, global_batch: int, rank: int = 0, world: int = 1, start_step: int = 0, steps: int = 0) -> None:
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by the {world} processes")
        self.g, self.rank, self.world = global_batch, rank, world
        self.local = global_batch // world
        self.start_step, self.steps = start_step, steps

    def __iter__(self) -> Iterator[int]:
        for s in range(self.start_step, self.steps):
            base = s * self.g + self.rank * self.local
            yield from range(base, base + self.local)

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step) * self.local


def collate(samples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
