"""Exponential moving average of network parameters (docs/reference.md §4.4)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def create_ema(model: nn.Module) -> nn.Module:
    """Exact fp32 copy of `model` (the original initialises with an EMA update of rate 0), frozen, eval mode."""
    ema = copy.deepcopy(model).float()
    ema.requires_grad_(False)
    return ema.eval()


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, rate: float) -> None:
    """θ_ema ← rate·θ_ema + (1 − rate)·θ, parameters only (U-ViT has no buffers, §4.4)."""
    ema_params, params = list(ema.parameters()), list(model.parameters())
    if len(ema_params) != len(params):
        raise ValueError("ema and model have different parameter lists")
    params = [p.detach().to(dtype=e.dtype) for p, e in zip(params, ema_params, strict=True)]
    # lerp(θ_ema, θ, 1 - rate) == rate·θ_ema + (1 - rate)·θ
    torch._foreach_lerp_(ema_params, params, 1.0 - rate)


def initial_weight_share(rate: float, steps: int) -> float:
    """Share of the initial (random) weights still in the EMA after `steps` updates: rate ** steps.

    The EMA starts as a copy of the initialisation, so after n updates θ_ema = rate^n·θ_0 + (the
    rest over the trained weights): with the paper's 0.9999, 2,000 steps leave 82% of θ_0 in it.
    """
    return float(rate) ** int(steps)
