"""Named backbones (paper names) and the official experiment configs (uvit-reference §3.1)."""

from __future__ import annotations

from .uvit import UViT


def _backbone(patch_size: int, embed_dim: int, depth: int, num_heads: int, conv: bool = True):
    return dict(
        patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads, conv=conv
    )


# Paper backbones (Table 1 of the paper; §2.4). H configs drop the final conv (§1.4).
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
    # Not from the paper: a CPU-sized backbone for the 32x32 demo pipeline (5 blocks, 64 tokens),
    # sized by measurement so that the demo trains for a few thousand steps in minutes on 2 cores.
    "U-ViT-demo": _backbone(4, 64, 4, 2),
}

_PIXEL32 = dict(img_size=32, in_chans=3)
_PIXEL64 = dict(img_size=64, in_chans=3)
_LATENT32 = dict(img_size=32, in_chans=4)  # 256 px images through the KL-f8 autoencoder
_LATENT64 = dict(img_size=64, in_chans=4)  # 512 px images
_TEXT = dict(clip_dim=768, num_clip_token=77)  # CLIP ViT-L/14 last_hidden_state (§1.1)

# Full constructor kwargs per official config file (§3.1). mlp_ratio 4, qkv_bias False,
# mlp_time_embed False everywhere (§3). num_classes 1001 = 1000 + null class for CFG (§1.1).
OFFICIAL_CONFIGS: dict[str, dict] = {
    "cifar10_uvit_small": {**_PIXEL32, **PRESETS["U-ViT-S/2"], "num_classes": -1},
    "celeba64_uvit_small": {**_PIXEL64, **PRESETS["U-ViT-S/4"], "num_classes": -1},
    "imagenet64_uvit_mid": {**_PIXEL64, **PRESETS["U-ViT-M/4"], "num_classes": 1000},
    "imagenet64_uvit_large": {**_PIXEL64, **PRESETS["U-ViT-L/4"], "num_classes": 1000},
    "imagenet256_uvit_large": {**_LATENT32, **PRESETS["U-ViT-L/2"], "num_classes": 1001},
    "imagenet256_uvit_huge": {**_LATENT32, **PRESETS["U-ViT-H/2"], "num_classes": 1001},
    "imagenet512_uvit_large": {**_LATENT64, **PRESETS["U-ViT-L/4"], "num_classes": 1001},
    "imagenet512_uvit_huge": {**_LATENT64, **PRESETS["U-ViT-H/4"], "num_classes": 1001},
    "mscoco_uvit_small": {**_LATENT32, **PRESETS["U-ViT-S/2"], **_TEXT},
    "mscoco_uvit_small_deep": {**_LATENT32, **PRESETS["U-ViT-S/2-Deep"], **_TEXT},
}
_COMMON = dict(mlp_ratio=4.0, qkv_bias=False, mlp_time_embed=False)
for _name, _cfg in OFFICIAL_CONFIGS.items():
    # §3.1: ImageNet configs train with gradient checkpointing, CIFAR/CelebA/COCO without.
    _cfg.update(_COMMON, use_checkpoint=_name.startswith("imagenet"))


def resolve_kwargs(preset: str | None = None, **overrides) -> dict:
    """Constructor kwargs of a preset (paper name or official config name) updated by overrides."""
    if preset is None:
        kwargs = {}
    elif preset in PRESETS:
        kwargs = dict(PRESETS[preset])
    elif preset in OFFICIAL_CONFIGS:
        kwargs = dict(OFFICIAL_CONFIGS[preset])
    else:
        known = ", ".join([*PRESETS, *OFFICIAL_CONFIGS])
        raise ValueError(f"unknown preset {preset!r}; known presets: {known}")
    kwargs.update(overrides)
    missing = [k for k in ("img_size", "in_chans") if k not in kwargs]
    if preset is not None and missing:
        raise ValueError(
            f"preset {preset!r} needs {', '.join(missing)} (pass as keyword overrides)"
        )
    return kwargs


def build_uvit(preset: str | None = None, **overrides) -> UViT:
    """Build a UViT from a preset name (PRESETS or OFFICIAL_CONFIGS key) plus keyword overrides.

    Backbone presets need `img_size` and `in_chans`, e.g.
    `build_uvit("U-ViT-S/2", img_size=32, in_chans=3)`; official configs are complete.
    """
    kwargs = resolve_kwargs(preset, **overrides)
    try:
        return UViT(**kwargs)
    except TypeError as e:  # missing / unknown keyword -> ValueError naming it
        raise ValueError(f"build_uvit({preset!r}): {e}") from e
