"""Published U-ViT artifacts: recognise an official state dict, infer its config, report mismatches.

Official `.pth` files are plain `state_dict()`s of the raw module, no `module.` prefix (§2); they load
with `strict=True` into `UViT(**OFFICIAL_CONFIGS[name])`.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from .config import UViTConfig, load_official_configs, official_script_defaults
from .presets import OFFICIAL_CONFIGS
from .uvit import UViT


def _diffusion(cfg: dict, defaults: dict) -> dict:
    """Schedule, CFG label-dropping rate and data kind of one official config (§3.2).

    Latent configs also record the autoencoder latent scale (§4.5: the config's value, else the
    autoencoder's default 0.18215), so evaluation decodes their samples.
    """
    p_uncond = cfg["dataset.p_uncond"] if cfg.get("dataset.cfg", False) else 0.0
    if "autoencoder.pretrained_path" in cfg:
        scale = cfg.get("autoencoder.scale_factor", defaults["autoencoder.scale_factor"])
        data = {"kind": "latent_moments", "scale_factor": scale}
    else:
        data = {"kind": "pixels"}
    return {"schedule": cfg["schedule"], "p_uncond": p_uncond, "data": data}


# What each official config trained/sampled with (§3.2, §3.3): needed to sample from an imported file.
OFFICIAL_DIFFUSION: dict[str, dict] = {
    name: _diffusion(cfg, official_script_defaults())
    for name, cfg in load_official_configs().items()
}


def _as_config(kwargs: dict | UViTConfig) -> UViTConfig:
    return kwargs if isinstance(kwargs, UViTConfig) else UViTConfig.from_kwargs(kwargs, prefix="")


@functools.cache
def _shapes(cfg: UViTConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # full-size models without allocating memory
        model = UViT(**cfg.to_dict())
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def expected_shapes(kwargs: dict | UViTConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict of a UViT with these arguments (built on the meta device)."""
    # Checkpointing and the attention kernel do not change the weights: one cache entry for all.
    cfg = dataclasses.replace(
        _as_config(kwargs), use_checkpoint=False, attention="sdpa", checkpoint_every=1
    )
    return dict(_shapes(cfg))


def state_dict_problems(state: dict, kwargs: dict | UViTConfig) -> list[str]:
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
