"""Named backbones (paper names) and the official experiment configs (docs/reference.md §3.1)."""

from __future__ import annotations

from typing import Any

from .config import UViTConfig, load_official_configs, official_nnet_kwargs
from .uvit import UViT


def _backbone(patch_size: int, embed_dim: int, depth: int, num_heads: int, conv: bool = True):
    return dict(
        patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads, conv=conv
    )


# Paper backbones (Table 1 of the paper; §2.4). H configs drop the final conv (§1.4).
# tests/models/test_official_configs.py checks them against the official configs' nnet values.
PRESETS: dict[str, dict] = {
    "U-ViT-S/2": _backbone(2, 512, 12, 8),
    "U-ViT-S/4": _backbone(4, 512, 12, 8),
    "U-ViT-S/2-Deep": _backbone(2, 512, 16, 8),
    "U-ViT-M/2": _backbone(2, 768, 16, 12),
    "U-ViT-M/4": _backbone(4, 768, 16, 12),
    "U-ViT-L/2": _backbone(2, 1024, 20, 16),
    "U-ViT-L/4": _backbone(4, 1024, 20, 16),
    "U-ViT-H/2": _backbone(2, 1152, 28, 16, conv=False),
    "U-ViT-H/4": _backbone(4, 1152, 28, 16, conv=False),
    # Not from the paper: a CPU-sized backbone for the demo environments (5 blocks of width 64; the
    # demo runs it on 4x4 latents with patch_size 1, 16 tokens), sized by measurement so that the
    # demo trains for a few thousand steps in minutes on 2 cores.
    "U-ViT-demo": _backbone(4, 64, 4, 2),
}

# Complete constructor kwargs per official config, from the config's `nnet.*` values (§3.1) with the
# original's defaults for what the file leaves out (in_chans 3, conv True, use_checkpoint False, §1).
OFFICIAL_CONFIGS: dict[str, dict] = {
    name: UViTConfig(**official_nnet_kwargs(name)).to_dict() for name in load_official_configs()
}


def preset_kwargs(preset: str | None) -> dict[str, Any]:
    """The kwargs a preset states (paper backbone or official config name); None -> {}."""
    if preset is None:
        return {}
    if preset in PRESETS:
        return dict(PRESETS[preset])
    if preset in OFFICIAL_CONFIGS:
        return dict(OFFICIAL_CONFIGS[preset])
    known = ", ".join([*PRESETS, *OFFICIAL_CONFIGS])
    raise ValueError(f"unknown preset {preset!r}; known presets: {known}")


def resolve_config(preset: str | None = None, **overrides) -> UViTConfig:
    """The `UViTConfig` of a preset updated by overrides (not validated: `validate()` does that).

    A paper backbone does not say what it is applied to, so it needs `img_size`.
    """
    kwargs = {**preset_kwargs(preset), **overrides}
    if preset in PRESETS and "img_size" not in kwargs:
        raise ValueError(f"preset {preset!r} needs img_size (pass it as a keyword override)")
    return UViTConfig.from_kwargs(kwargs, prefix="")


def resolve_kwargs(preset: str | None = None, **overrides) -> dict[str, Any]:
    """Complete constructor kwargs of a preset updated by overrides (see `resolve_config`)."""
    return resolve_config(preset, **overrides).to_dict()


def build_uvit(preset: str | None = None, **overrides) -> UViT:
    """Build a UViT from a preset name (PRESETS or OFFICIAL_CONFIGS key) plus keyword overrides.

    Backbone presets need `img_size` (in_chans defaults to 3 as in the original), e.g.
    `build_uvit("U-ViT-S/2", img_size=32)`; official configs are complete.
    """
    try:
        return UViT(**resolve_kwargs(preset, **overrides))
    except ValueError as e:
        raise ValueError(f"build_uvit({preset!r}): {e}") from e
