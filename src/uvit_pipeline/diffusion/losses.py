"""Training objective: plain ε-prediction MSE (§4.1, §4.2)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedules import NoiseSchedule

__all__ = ["noise_prediction_loss"]


def noise_prediction_loss(
    nnet: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    cond: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample loss (B,) = mean over all non-batch dims of (ε − ε̂(x_t, t, cond))².

    t comes from `schedule.sample_train_t` (continuous: t ~ U[0,1), net sees 999·t; discrete:
    n ~ U{1..1000}, net sees n, ᾱ_n read exactly from the table); no loss weighting (§4.1).
    `nnet` is called as nnet(x_t, net_timesteps, cond); `generator` must live on x0's device.
    """
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point() or x0.ndim < 2:
        raise ValueError(
            "x0 must be a floating-point tensor of shape (B, ...) with at least 2 dims"
        )
    batch = x0.shape[0]
    t_cont, net_t = schedule.sample_train_t(batch, generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = schedule.marginal(x0, t_cont, noise, net_timesteps=net_t)  # (B, C, H, W)
    eps_hat = nnet(x_t, net_t, cond)
    if eps_hat.shape != x0.shape:
        raise ValueError(f"nnet returned shape {tuple(eps_hat.shape)}, expected {tuple(x0.shape)}")
    return (noise - eps_hat.float()).pow(2).flatten(1).mean(dim=1)  # (B,)
