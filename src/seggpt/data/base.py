"""The data contract every training source satisfies: a :class:`Pair` of label maps, and :class:`Source`.

A source hands out in-context pairs at the label-map level (images plus integer label maps). Everything that
makes a pair into a training sample is shared and lives in :mod:`seggpt.data.pairs`: random colouring (one
colour mapping for the example and the query), mix-context stitching, canvas assembly, normalisation, the
``valid`` mask and patch masking. So a new source (a dataset reader, the procedural SynthContext world, a
user's folder) only decides *which* two images form a pair and which ids mean the same thing in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

SEMANTIC, INSTANCE = 0, 1  # seg_type values, equal to seggpt.modeling.SEMANTIC / INSTANCE

# Label value for pixels excluded from the loss (VOC boundaries, Cityscapes void, COCO crowd, ...).
IGNORE = -1


class DataError(ValueError):
    """A sample cannot be read or is inconsistent (missing mask, size mismatch, unknown class id).

    The message always names the offending file. The trainer can skip such samples and count them
    (``data.skip_bad_samples``) instead of stopping a long run.
    """


@dataclass
class Pair:
    """One in-context pair: an example (image + label map) and a query (image + label map).

    Label maps are (h, w) integer arrays: 0 = background (painted black), a positive id = one class or one
    instance, :data:`IGNORE` (-1) = excluded from the loss. An id present in both label maps means the same
    thing in both and is painted with the same random colour; ids are otherwise arbitrary and never shown to
    the model (colours are drawn afresh for every pair).

    Attributes:
        example_image: (h, w, 3) uint8.
        example_labels: (h, w) int; same (h, w) as example_image.
        query_image: (h', w', 3) uint8.
        query_labels: (h', w') int.
        seg_type: SEMANTIC (0, category task) or INSTANCE (1, instance task); picks the model's type token.
        ids_global: True when ids mean the same thing across pairs of this source (dataset-wide class ids).
            Mix-context stitching then keeps them; with False (per-image instance ids) it offsets the ids of
            the second pair so they get their own colours.
        meta: free-form provenance, e.g. {"source": "ade20k", "mode": "same" | "other" | "views", "files": [...]}.
            The pair-sampling tests read "mode".
    """

    example_image: np.ndarray
    example_labels: np.ndarray
    query_image: np.ndarray
    query_labels: np.ndarray
    seg_type: int = SEMANTIC
    ids_global: bool = True
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Source(Protocol):
    """Anything the mixture sampler can draw training pairs from.

    ``sample_pair`` must be a pure function of the generator it is given: the same generator state gives the
    same pair. That is what makes runs reproducible, resumable exactly, and shardable across ranks (the
    trainer derives one generator per global sample index). Do not keep other random state.

    Returned arrays should already be (size[0], size[1]) — sources crop / augment to the model's image size
    with :mod:`seggpt.data.augment`; anything else is resized by the pipeline (bicubic images, nearest labels).

    Raise :class:`DataError` naming the file for unreadable or inconsistent data.
    """

    name: str

    def __len__(self) -> int:
        """Number of distinct query items (images); informational, used for logging and epochs."""
        ...

    def sample_pair(self, rng: np.random.Generator, size: tuple[int, int]) -> Pair:
        """Draw one pair; ``size`` is (h, w) of one image (``SegGPTConfig.image_size``)."""
        ...
