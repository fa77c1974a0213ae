"""SegGPT: segment everything in context.

Show the model example images with masks; it segments the same category or the same object in new images.

    >>> import seggpt
    >>> predictor = seggpt.SegGPTPredictor()        # the embedded model, or a checkpoint path
    >>> predictor.set_prompts(["cat.jpg"], ["cat_mask.png"])
    >>> labels = predictor.predict("another_cat.jpg").labels
"""

from seggpt.checkpoint import CheckpointError, convert, load_model, read_checkpoint, save_native
from seggpt.config import SegGPTConfig, preset, vit_base, vit_large, vit_small, vit_tiny
from seggpt.modeling import INSTANCE, SEMANTIC, SegGPT
from seggpt.predictor import Prediction, SegGPTPredictor
from seggpt.video import SegGPTVideoPredictor

__version__ = "0.1.0"

__all__ = [
    "INSTANCE",
    "Prediction",
    "SegGPTPredictor",
    "SegGPTVideoPredictor",
    "SEMANTIC",
    "CheckpointError",
    "SegGPT",
    "SegGPTConfig",
    "convert",
    "load_model",
    "preset",
    "read_checkpoint",
    "save_native",
    "vit_base",
    "vit_large",
    "vit_small",
    "vit_tiny",
]
