"""Source types by name, for YAML configs: ``{type: NAME, weight: w, ...options}``.

``SOURCE_TYPES`` maps NAME -> "module:factory"; modules are imported only when used, so a config that names
no COCO source does not need pycocotools. A factory takes the options as keyword arguments and returns a
:class:`~seggpt.data.base.Source`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from seggpt.data.base import Source

SOURCE_TYPES: dict[str, str | Callable[..., Source]] = {
    "coco_instance": "seggpt.data.readers.coco:coco_instance_source",
    "coco_panoptic": "seggpt.data.readers.coco:coco_panoptic_source",
    "coco_stuff": "seggpt.data.readers.coco:coco_stuff_source",
    "paco": "seggpt.data.readers.coco:paco_source",
    "ade20k": "seggpt.data.readers.scenes:ade20k_source",
    "voc": "seggpt.data.readers.scenes:voc_source",
    "cityscapes": "seggpt.data.readers.scenes:cityscapes_source",
    "lip": "seggpt.data.readers.scenes:lip_source",
    "isaid": "seggpt.data.readers.aerial:isaid_source",
    "loveda": "seggpt.data.readers.aerial:loveda_source",
    "aerial": "seggpt.data.readers.aerial:aerial_source",
    "vessels": "seggpt.data.readers.vessels:vessels_source",
    "fss1000": "seggpt.data.readers.fss:fss1000_source",
    "folder": "seggpt.data.folder:folder_source",
    "camvid": "seggpt.data.readers.photos:camvid_source",
    "yolo": "seggpt.data.readers.photos:yolo_source",
    "davis_frames": "seggpt.data.readers.photos:davis_frames_source",
    "toy": "seggpt.data.toy:toy_source",
    # Owned by the SynthContext work (seggpt.data.synth / real_pairs).
    "synth": "seggpt.data.synth:build_source",
    "real_pairs": "seggpt.data.real_pairs:build_source",
}


def register_source(name: str, factory: str | Callable[..., Source]) -> None:
    """Add a source type (a callable, or a "module:function" string imported on first use)."""
    SOURCE_TYPES[name] = factory


def build_source(spec: dict[str, Any]) -> Source:
    """Build one source from its config entry (``type`` plus options; ``weight`` is the mixture's business)."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    spec.pop("weight", None)
    if kind not in SOURCE_TYPES:
        raise ValueError(f"unknown data source type {kind!r}; known: {sorted(SOURCE_TYPES)}")
    factory = SOURCE_TYPES[kind]
    if isinstance(factory, str):
        module, func = factory.split(":")
        factory = getattr(importlib.import_module(module), func)
    try:
        return factory(**spec)
    except TypeError as e:
        raise ValueError(f"bad options for data source {kind!r}: {e}") from e
