"""Training SegGPT: config (YAML + dotted overrides), the trainer, schedules, checkpoints, distributed runs.

from seggpt.train import load_config, train
result = train(load_config("configs/tiny.yaml", ["steps=100", "optim.lr=1e-3"]), progress=True)
result.model_path          # runs/.../model.safetensors, readable by seggpt.load_model

Research adds a loss of its own with ``register_extra_loss`` (see :mod:`seggpt.train.extra_loss`).
"""

from seggpt.train.config import DataSpec, ExtraLossSpec, ModelSpec, OptimSpec, TrainConfig, load_config
from seggpt.train.extra_loss import ExtraLoss, register_extra_loss
from seggpt.train.trainer import TrainResult, build_model, latest_checkpoint, per_sample_loss, train

__all__ = [
    "DataSpec",
    "ExtraLoss",
    "ExtraLossSpec",
    "ModelSpec",
    "OptimSpec",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "latest_checkpoint",
    "load_config",
    "per_sample_loss",
    "register_extra_loss",
    "train",
]
