"""U-ViT backbone, its config type, presets, checkpoint reading and analytic cost model (docs/reference.md §1-§3, §9)."""

from .attention import ATTENTION_BACKENDS, Attention
from .checkpoint import (
    CheckpointInfo,
    label_roles,
    load_checkpoint_dir,
    load_uvit_from_checkpoint,
    read_checkpoint_info,
)
from .config import UViTConfig, load_official_configs, official_config
from .flops import count_flops, count_params, mfu, train_step_flops
from .presets import OFFICIAL_CONFIGS, PRESETS, build_uvit, resolve_config, resolve_kwargs
from .uvit import UViT, timestep_embedding, unpatchify

__all__ = [
    "ATTENTION_BACKENDS",
    "Attention",
    "CheckpointInfo",
    "OFFICIAL_CONFIGS",
    "PRESETS",
    "UViT",
    "UViTConfig",
    "build_uvit",
    "count_flops",
    "count_params",
    "label_roles",
    "load_checkpoint_dir",
    "load_official_configs",
    "load_uvit_from_checkpoint",
    "mfu",
    "official_config",
    "read_checkpoint_info",
    "resolve_config",
    "resolve_kwargs",
    "timestep_embedding",
    "train_step_flops",
    "unpatchify",
]
