"""Published U-ViT artifacts: recognise an official state dict, infer its config, report mismatches.

Official `.pth` files are plain `state_dict()`s of the raw module, no `module.` prefix (§2); they load
with `strict=True` into `UViT(**OFFICIAL_CONFIGS[name])`.
"""

from __future__ import annotations

import torch

from .presets import OFFICIAL_CONFIGS
from .uvit import UViT

# What each official config trained/sampled with (§3.2, §3.3): needed to sample from an imported file.
# Latent configs also record the autoencoder latent scale (§4.5), so evaluation decodes their samples.
_LATENT = {"kind": "latent_moments", "scale_factor": 0.18215}
_LATENT_COCO = {"kind": "latent_moments", "scale_factor": 0.23010}  # §4.5, issue #17
_PIXELS = {"kind": "pixels"}
OFFICIAL_DIFFUSION: dict[str, dict] = {
    "cifar10_uvit_small": {"schedule": "vp_continuous", "p_uncond": 0.0, "data": _PIXELS},
    "celeba64_uvit_small": {"schedule": "vp_continuous", "p_uncond": 0.0, "data": _PIXELS},
    "imagenet64_uvit_mid": {"schedule": "vp_continuous", "p_uncond": 0.0, "data": _PIXELS},
    "imagenet64_uvit_large": {"schedule": "vp_continuous", "p_uncond": 0.0, "data": _PIXELS},
    "imagenet256_uvit_large": {"schedule": "vp_continuous", "p_uncond": 0.15, "data": _LATENT},
    "imagenet256_uvit_huge": {"schedule": "discrete", "p_uncond": 0.1, "data": _LATENT},
    "imagenet512_uvit_large": {"schedule": "vp_continuous", "p_uncond": 0.15, "data": _LATENT},
    "imagenet512_uvit_huge": {"schedule": "discrete", "p_uncond": 0.1, "data": _LATENT},
    "mscoco_uvit_small": {"schedule": "discrete", "p_uncond": 0.1, "data": _LATENT_COCO},
    "mscoco_uvit_small_deep": {"schedule": "discrete", "p_uncond": 0.1, "data": _LATENT_COCO},
}

_SHAPES_CACHE: dict[str, dict[str, tuple[int, ...]]] = {}


def expected_shapes(kwargs: dict) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict a UViT with these kwargs has (built on the meta device: no memory)."""
    cache_key = repr(sorted(kwargs.items()))
    if cache_key not in _SHAPES_CACHE:
        with torch.device("meta"):
            model = UViT(**{**kwargs, "use_checkpoint": False})
        _SHAPES_CACHE[cache_key] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return dict(_SHAPES_CACHE[cache_key])


def state_dict_problems(state: dict, kwargs: dict) -> list[str]:
    """Every difference between ``state`` and the state dict of ``UViT(**kwargs)``, one line per key."""
    want = expected_shapes(kwargs)
    problems = [
        f"missing key {k} (expected shape {list(s)})" for k, s in want.items() if k not in state
    ]
    problems += [
        f"unexpected key {k} (shape {list(state[k].shape)})" for k in state if k not in want
    ]
    problems += [
        f"shape mismatch for {k}: file has {list(state[k].shape)}, config expects {list(s)}"
        for k, s in want.items()
        if k in state and tuple(state[k].shape) != s
    ]
    return problems


def check_is_uvit_state_dict(obj, source: str) -> dict[str, torch.Tensor]:
    """Refuse anything that is not a flat ``{name: tensor}`` U-ViT state dict, saying what was found."""
    if not isinstance(obj, dict):
        raise ValueError(f"{source} is not a U-ViT state dict: it holds a {type(obj).__name__}")
    if set(obj) & {"state_dict", "model", "nnet", "nnet_ema"} and not all(
        torch.is_tensor(v) for v in obj.values()
    ):
        raise ValueError(
            f"{source} is a wrapper dict with keys {sorted(obj)[:8]}, not a plain U-ViT state dict; "
            "extract the network's state_dict first"
        )
    non_tensor = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if non_tensor:
        raise ValueError(
            f"{source} is not a U-ViT state dict: entries {non_tensor[:5]} are not tensors"
        )
    # Official files have no `module.` prefix (§2); a DDP-saved state dict does: accept both.
    stripped = {k.removeprefix("module."): v for k, v in obj.items()}
    if "pos_embed" not in stripped or "patch_embed.proj.weight" not in stripped:
        keys = sorted(stripped)[:8]
        raise ValueError(
            f"{source} is not a U-ViT state dict: no pos_embed/patch_embed.proj.weight "
            f"(first keys: {keys})"
        )
    return stripped


def infer_official_config(state: dict, source: str = "the state dict") -> str:
    """The official config whose state dict ``state`` matches exactly (key names and shapes).

    No exact match -> ValueError listing the differences to the closest config, key by key.
    """
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    best = None
    for name, kwargs in OFFICIAL_CONFIGS.items():
        if expected_shapes(kwargs) == shapes:
            return name
        problems = state_dict_problems(state, kwargs)
        if best is None or len(problems) < len(best[1]):
            best = (name, problems)
    detail = ""
    if best is not None:
        name, problems = best
        shown = problems[:20] + (
            [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        )
        detail = f"; closest is {name}:\n  " + "\n  ".join(shown)
    raise ValueError(
        f"{source} matches no official U-ViT config (one of {sorted(OFFICIAL_CONFIGS)}){detail}"
    )
