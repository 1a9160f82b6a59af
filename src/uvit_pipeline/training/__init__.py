"""Training: typed config, the accelerate training program, its launcher and checkpoints (§4.4)."""

from .checkpoint import load_checkpoint_dir, load_uvit_from_checkpoint
from .config import DataConfig, TrainConfig
from .launcher import build_launch_command, launch
from .loop import train

__all__ = [
    "DataConfig",
    "TrainConfig",
    "build_launch_command",
    "launch",
    "load_checkpoint_dir",
    "load_uvit_from_checkpoint",
    "train",
]
