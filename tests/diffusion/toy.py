"""Closed-form and toy ε-predictors shared by the diffusion tests."""

from __future__ import annotations

import math

import torch


def gaussian_eps_fn(schedule, mean: float, std: float):
    """Exact ε-predictor for x0 ~ N(mean, std²) per element: E[ε | x_t] = σ(x − α m)/(α²s² + σ²)."""

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.double()
        shape = (-1,) + (1,) * (x.ndim - 1)
        a, s = schedule.alpha(t).view(shape), schedule.sigma(t).view(shape)
        out = s * (x.double() - a * mean) / (a * a * std * std + s * s)
        return out.to(x.dtype)

    return eps_fn


def perturbed_eps_fn(schedule, mean: float = 0.3, std: float = 0.5, dim: int = 16, seed: int = 0):
    """Gaussian predictor plus a fixed nonlinear term (tanh of a random linear map): a deterministic,
    non-trivial stand-in for a trained network on inputs of shape (B, 1, 4, 4)."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(dim, dim, generator=gen, dtype=torch.float64) / math.sqrt(dim)
    base = gaussian_eps_fn(schedule, mean, std)

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        flat = x.double().reshape(x.shape[0], -1)
        extra = 0.1 * torch.tanh(flat @ weight.T + t.double()[:, None])
        return (base(x, t).double() + extra.reshape(x.shape)).to(x.dtype)

    return eps_fn


class CountingEps:
    """Wraps an eps_fn and records every call's times."""

    def __init__(self, fn):
        self.fn, self.times = fn, []

    def __call__(self, x, t):
        self.times.append(float(t[0]))
        return self.fn(x, t)
