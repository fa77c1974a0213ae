"""A tiny procedural dataset for smoke tests, benchmarks and debugging the trainer without any download.

Each item is a noisy background with a few rectangles and ellipses; each class has its own texture colour,
so a class is recognisable from the image alone. Items are a pure function of (seed, index).
"""

from __future__ import annotations

import numpy as np

from seggpt.data.base import INSTANCE, SEMANTIC
from seggpt.data.pairs import pair_source
from seggpt.data.readers.base import LabelDataset


class ToyShapes(LabelDataset):
    """Procedural images (H, W, 3) with label maps: ``num_classes`` classes, 1-4 shapes per image."""

    def __init__(
        self,
        num_images: int = 32,
        num_classes: int = 3,
        size: tuple[int, int] = (64, 64),
        seed: int = 0,
        task: str = "semantic",
    ) -> None:
        self.num_images, self.num_classes, self.size, self.seed = num_images, num_classes, tuple(size), seed
        self.seg_type = INSTANCE if task == "instance" else SEMANTIC
        self.name = f"toy_{task}"
        rng = np.random.default_rng([seed, 999])
        self.class_colours = rng.integers(40, 256, size=(num_classes + 1, 3))

    def __len__(self) -> int:
        return self.num_images

    def describe(self, i: int) -> str:
        return f"toy item {i}"

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, i])
        h, w = self.size
        image = rng.normal(60, 20, size=(h, w, 3))
        labels = np.zeros((h, w), np.int32)
        yy, xx = np.mgrid[0:h, 0:w]
        for k in range(int(rng.integers(1, 5))):
            c = int(rng.integers(1, self.num_classes + 1))
            cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
            ry, rx = rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w
            if rng.random() < 0.5:
                region = (abs(yy - cy) < ry) & (abs(xx - cx) < rx)
            else:
                region = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            image[region] = self.class_colours[c] + rng.normal(0, 10, size=(int(region.sum()), 3))
            labels[region] = k + 1 if self.seg_type == INSTANCE else c
        return np.clip(image, 0, 255).astype(np.uint8), labels


def toy_source(num_images: int = 32, num_classes: int = 3, size=(64, 64), seed: int = 0, task="semantic", **options):
    """Source factory for configs: ``{type: toy, num_images: 32, task: semantic|instance}``."""
    return pair_source(ToyShapes(num_images, num_classes, tuple(size), seed, task), **options)
