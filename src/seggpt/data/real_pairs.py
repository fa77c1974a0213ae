"""Real photographs that ship inside a registry package, as instance-style two-view training pairs.

SynthContext teaches the embedded model what "the same category" and "the same object" mean; it does not teach
real textures. scikit-image bundles a handful of photographs in its wheel (``skimage/data/*.png|jpg``: the
astronaut, a cat, coffee, a rocket, a motorcycle stereo pair, microscopy, the Hubble deep field, ...). They
are read straight from the installed package, never downloaded. Each photo is cut into regions by an
unsupervised segmentation (Felzenszwalb's graph method, at two scales), and a pair is two random views (crop,
scale, flip, colour jitter) of one photo with a random subset of its regions labelled 1..n in both: the model
learns to follow marked regions across views of real images.

:data:`HELD_OUT_PHOTOS` are never used for training; the demo assets come from them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from seggpt.data.augment import AugmentConfig, random_view
from seggpt.data.base import INSTANCE, Pair

log = logging.getLogger(__name__)

# name -> file inside skimage/data/. Greyscale photos are used as grey RGB.
PHOTOS: dict[str, str] = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "retina": "retina.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "camera": "camera.png",
    "coins": "coins.png",
    "moon": "moon.png",
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
}
# Kept out of training so the demo shows the model on photographs it has never seen.
HELD_OUT_PHOTOS: tuple[str, ...] = ("chelsea", "coffee")
TRAIN_PHOTOS: tuple[str, ...] = tuple(p for p in PHOTOS if p not in HELD_OUT_PHOTOS)

# Photos are kept at this longest side: enough for 128-pixel views of a 30..100 % crop, cheap to segment.
WORK_SIDE = 320
# Felzenszwalb scales (larger = bigger regions) at WORK_SIDE, and the smallest region kept, in pixels.
SEGMENT_SCALES: tuple[float, ...] = (150.0, 400.0)
MIN_REGION = 300


def skimage_data_dir() -> Path:
    """The folder of photographs inside the installed scikit-image wheel."""
    try:
        import skimage.data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "real photo pairs need scikit-image (it ships the photographs): pip install 'seggpt[real]'"
        ) from e
    return Path(skimage.data.__file__).parent


def load_photo(name: str, side: int = WORK_SIDE) -> np.ndarray:
    """A bundled photograph as (H, W, 3) uint8 with its longest side resized to ``side`` (never enlarged)."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {sorted(PHOTOS)}")
    path = skimage_data_dir() / PHOTOS[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in this scikit-image install; reinstall scikit-image")
    img = Image.open(path).convert("RGB")
    scale = side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    return np.asarray(img).copy()


def segment_regions(image: np.ndarray, scale: float, min_region: int = MIN_REGION) -> np.ndarray:
    """Unsupervised regions of an image: (H, W) int32, 0 where a region is smaller than ``min_region``.

    Felzenszwalb-Huttenlocher graph segmentation; region ids are renumbered 1..n by decreasing area.
    """
    from skimage.segmentation import felzenszwalb

    seg = felzenszwalb(image, scale=scale, sigma=0.8, min_size=min_region // 3)
    ids, counts = np.unique(seg, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    lut = np.zeros(int(ids.max()) + 1, np.int32)
    kept = [i for i in order if counts[i] >= min_region]
    lut[ids[kept]] = np.arange(1, len(kept) + 1, dtype=np.int32)
    return lut[seg]


@dataclass(frozen=True)
class SegmentedPhoto:
    name: str
    image: np.ndarray  # (H, W, 3) uint8
    regions: tuple[np.ndarray, ...]  # one (H, W) int32 region map per segmentation scale


@cache
def segmented_photo(name: str) -> SegmentedPhoto:
    """Load and segment a photo once per process (0.1 to 0.5 s each on two cores)."""
    image = load_photo(name)
    return SegmentedPhoto(name, image, tuple(segment_regions(image, s) for s in SEGMENT_SCALES))


class RealPhotoPairs:
    """Two-view instance pairs from the photographs bundled with scikit-image: a training Source.

    Args:
        photos: which photos (default: all but :data:`HELD_OUT_PHOTOS`).
        max_regions: at most this many regions are labelled in a pair (a random subset, ids 1..n).
        augment: view parameters (crop scale, flip, colour jitter).
    """

    def __init__(
        self,
        photos: tuple[str, ...] | list[str] | None = None,
        max_regions: int = 8,
        augment: AugmentConfig | None = None,
        name: str = "real_pairs",
    ) -> None:
        photos = tuple(photos) if photos is not None else TRAIN_PHOTOS
        unknown = sorted(set(photos) - set(PHOTOS))
        if unknown or not photos:
            raise ValueError(f"unknown photos {unknown}; choose from {sorted(PHOTOS)}")
        if max_regions < 1:
            raise ValueError(f"max_regions must be >= 1, got {max_regions}")
        self.name = name
        self.photos = photos
        self.max_regions = max_regions
        self.augment = augment or AugmentConfig(scale=(0.35, 1.0), hue=0.05)
        skimage_data_dir()  # fail now, not in the middle of training, when scikit-image is missing

    def __len__(self) -> int:
        return len(self.photos)

    def __repr__(self) -> str:
        return f"RealPhotoPairs({len(self.photos)} photos, max_regions={self.max_regions})"

    def sample_pair(self, rng: np.random.Generator, size: tuple[int, int]) -> Pair:
        """Two views of one photo; a random subset of its regions labelled 1..n consistently in both."""
        name = self.photos[int(rng.integers(len(self.photos)))]
        photo = segmented_photo(name)
        regions = photo.regions[int(rng.integers(len(photo.regions)))]
        ia, full_a = random_view(photo.image, regions, size, rng, self.augment)
        ib, full_b = random_view(photo.image, regions, size, rng, self.augment)
        # Label a random subset of the regions the example view shows well (>= 0.5 % of it), as 1..n.
        ids, counts = np.unique(full_a[full_a > 0], return_counts=True)
        shown = ids[counts >= max(1, full_a.size // 200)]
        lut = np.zeros(int(regions.max()) + 1, np.int32)
        if len(shown):
            n = int(rng.integers(1, min(self.max_regions, len(shown)) + 1))
            lut[rng.choice(shown, n, replace=False)] = np.arange(1, n + 1, dtype=np.int32)
        la, lb = lut[full_a], lut[full_b]
        return Pair(ia, la, ib, lb, INSTANCE, False, {"source": self.name, "mode": "views", "photo": name})


def build_source(**options) -> RealPhotoPairs:
    """Factory for YAML configs: ``{type: real_pairs, weight: w, max_regions: 8}``."""
    return RealPhotoPairs(**options)
