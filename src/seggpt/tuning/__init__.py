"""In-context tuning: freeze the model and learn the example itself.

The paper's strongest ADE20K and COCO-panoptic numbers come from a *learned prompt*: the whole model is frozen and
the example (the upper half of the image canvas, and here optionally of the mask canvas) becomes a tensor optimised
with the training loss on a task's training set. The learned prompt then serves as the example for every test image.
The authors released neither the code nor the prompts; this package is an implementation from the paper's
description.

Two ways to cover several classes:
    multi      one prompt whose mask is painted with ``build_palette(K)``: colour k stands for ``classes[k - 1]``;
               one forward per target, as the paper's ADE20K prompt.
    per-class  one binary prompt (white on black) per class, tuned jointly in one loop; a file holds K prompts and
               :func:`predict_per_class` (through the predictor) or :func:`segment_per_class` (tensors) merges
               their answers.

Instance task: ``task="instance"`` tunes with the instance type token, but the targets are still painted by class
id (instance colours are arbitrary per image, so there is no fixed colour a prompt could learn for them).

Shapes: G prompt groups (1, or K in per-class mode), P examples per group (feature ensemble), B queries, (h, w) one
image (``config.image_size``).

Import from here (``from seggpt.tuning import tune, load_prompt_into``); the modules behind it, one job each:
    prompt   :class:`LearnedPrompt`, the model fingerprint it is tied to, its safetensors file
    segment  segmenting with prompts: the predictor (images, per-class, video) and prompt tensors
    data     a user folder of images and masks, resized to the model; its classes
    loss     the tuning loss (canvas, soft IoU) of a batch through the frozen model
    loop     :func:`tune` and :class:`TuneConfig`: the optimisation, resume, validation
"""

from seggpt.tuning.data import (
    FolderDataset,
    ResizedDataset,
    SegmentationData,
    dataset_classes,
    open_folder,
    parse_class,
    read_label_map,
)
from seggpt.tuning.loop import LOSSES, MODES, TuneConfig, TuningStopped, tune, validation_score
from seggpt.tuning.loss import prompt_loss, soft_iou_loss
from seggpt.tuning.prompt import (
    TASKS,
    LearnedPrompt,
    PromptMismatchError,
    load_prompt_into,
    load_prompts,
    model_fingerprint,
    save_prompts,
)
from seggpt.tuning.segment import LearnedPromptVideo, iou_counts, predict_per_class, segment_per_class, segment_tensors

__all__ = [
    "LOSSES",
    "MODES",
    "TASKS",
    "FolderDataset",
    "LearnedPrompt",
    "LearnedPromptVideo",
    "PromptMismatchError",
    "ResizedDataset",
    "SegmentationData",
    "TuneConfig",
    "TuningStopped",
    "dataset_classes",
    "iou_counts",
    "load_prompt_into",
    "load_prompts",
    "model_fingerprint",
    "open_folder",
    "parse_class",
    "predict_per_class",
    "prompt_loss",
    "read_label_map",
    "save_prompts",
    "segment_per_class",
    "segment_tensors",
    "soft_iou_loss",
    "tune",
    "validation_score",
]
