"""U-ViT backbone, presets and analytic cost model (uvit-reference §1-2, §9)."""

from .attention import ATTENTION_BACKENDS, Attention
from .flops import count_flops, count_params, mfu, train_step_flops
from .presets import OFFICIAL_CONFIGS, PRESETS, build_uvit, resolve_kwargs
from .uvit import UViT, timestep_embedding, unpatchify

__all__ = [
    "ATTENTION_BACKENDS",
    "Attention",
    "OFFICIAL_CONFIGS",
    "PRESETS",
    "UViT",
    "build_uvit",
    "count_flops",
    "count_params",
    "mfu",
    "resolve_kwargs",
    "timestep_embedding",
    "train_step_flops",
    "unpatchify",
]
