"""U-ViT backbone, its config type, presets and analytic cost model (docs/reference.md §1-§3, §9)."""

from .attention import ATTENTION_BACKENDS, Attention
from .config import UViTConfig, load_official_configs, official_config
from .flops import count_flops, count_params, mfu, train_step_flops
from .presets import OFFICIAL_CONFIGS, PRESETS, build_uvit, resolve_config, resolve_kwargs
from .uvit import UViT, timestep_embedding, unpatchify

__all__ = [
    "ATTENTION_BACKENDS",
    "Attention",
    "OFFICIAL_CONFIGS",
    "PRESETS",
    "UViT",
    "UViTConfig",
    "build_uvit",
    "count_flops",
    "count_params",
    "load_official_configs",
    "mfu",
    "official_config",
    "resolve_config",
    "resolve_kwargs",
    "timestep_embedding",
    "train_step_flops",
    "unpatchify",
]
