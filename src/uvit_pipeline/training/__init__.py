"""Training: typed config, the accelerate training program, its child launch and checkpoints (§4.4)."""

from .checkpoint import load_checkpoint_dir, load_uvit_from_checkpoint
from .child import launch_training
from .config import DataConfig, TrainConfig
from .loop import train

__all__ = [
    "DataConfig",
    "TrainConfig",
    "launch_training",
    "load_checkpoint_dir",
    "load_uvit_from_checkpoint",
    "train",
]
