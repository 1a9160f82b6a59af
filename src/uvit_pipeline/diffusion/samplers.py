"""Samplers for noise-prediction models: reverse-SDE Euler–Maruyama, DPM-Solver-fast, DPM-Solver++.

All samplers integrate from t = 1 down to a small t_end on the continuous time of a schedule from
`schedules.py` and call `eps_fn(x, t_cont)` with t_cont of shape (B,); NFE = `steps` for every sampler.
Formulas follow docs/reference.md §5.1 (Euler–Maruyama, DPM-Solver v1 'fast') and §5.2 (DPM-Solver++ singlestep).
Schedule coefficients are evaluated in float64 and applied as python scalars, so x keeps its own dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .schedules import NoiseSchedule

__all__ = ["SAMPLERS", "DEFAULT_STEPS", "DEFAULT_T_END", "SamplerSpec", "fast_orders", "sample"]

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _Coef(NamedTuple):
    log_alpha: float
    alpha: float
    sigma: float
    lam: float


class _Evaluator:
    """Wraps eps_fn: scalar-time calls, optional x0 clipping, NFE count and progress bar."""

    def __init__(self, eps_fn: EpsFn, schedule: NoiseSchedule, clip_x0: bool, bar) -> None:
        self.eps_fn, self.schedule, self.clip_x0, self.bar = eps_fn, schedule, clip_x0, bar
        self.nfe = 0

    def coef(self, t: float) -> _Coef:
        tt = torch.tensor(t, dtype=torch.float64)
        s = self.schedule
        la = s.log_alpha(tt).item()
        return _Coef(la, math.exp(la), s.sigma(tt).item(), s.lambda_(tt).item())

    def inverse_lambda(self, lam: float) -> float:
        return self.schedule.inverse_lambda(torch.tensor(lam, dtype=torch.float64)).item()

    def eps(self, x: torch.Tensor, t: float) -> torch.Tensor:
        t_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        t_batch = torch.full((x.shape[0],), t, dtype=t_dtype, device=x.device)
        out = self.eps_fn(x, t_batch)
        if out.shape != x.shape:
            raise ValueError(f"eps_fn returned shape {tuple(out.shape)}, expected {tuple(x.shape)}")
        out = out.to(x.dtype)
        if self.clip_x0:
            # Clip the implied clean image to the data range, then re-derive ε from it.
            c = self.coef(t)
            x0 = ((x - c.sigma * out) / c.alpha).clamp(-1.0, 1.0)
            out = (x - c.alpha * x0) / c.sigma
        self.nfe += 1
        self.bar.update(1)
        return out

    def x0(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Data prediction x̂0 = (x − σ_t ε̂)/α_t (§5.2)."""
        c = self.coef(t)
        return (x - c.sigma * self.eps(x, t)) / c.alpha


def fast_orders(steps: int) -> list[int]:
    """Solver orders of DPM-Solver 'fast' order 3: K = steps//3 + 1 outer steps, sum = steps (§5.1)."""
    k = steps // 3 + 1
    if steps % 3 == 0:
        return [3] * (k - 2) + [2, 1]
    if steps % 3 == 1:
        return [3] * (k - 1) + [1]
    return [3] * (k - 1) + [2]


def _euler_maruyama(
    ev: _Evaluator, x: torch.Tensor, steps: int, t_end: float, generator
) -> torch.Tensor:
    # Grid [0] ∪ linspace(t_end, 1, steps), walked from t = 1 down over consecutive pairs (s < t) (§5.1).
    grid = [0.0, *np.linspace(t_end, 1.0, steps).tolist()]
    for i in range(steps, 0, -1):
        s, t = grid[i - 1], grid[i]
        beta = ev.schedule.beta(torch.tensor(t, dtype=torch.float64)).item()
        sigma = ev.coef(t).sigma
        # Reverse drift f − g²·score with score = −ε̂/σ: −½βx + β ε̂/σ.
        drift = -0.5 * beta * x + (beta / sigma) * ev.eps(x, t)
        x = x + drift * (s - t)
        if i > 1:  # no noise on the final step to s = 0
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + math.sqrt(beta * (t - s)) * z
    return x


def _dpm_solver_update(ev: _Evaluator, x, s: float, t: float, order: int, r1: float, r2: float):
    """One singlestep DPM-Solver update (noise prediction, §5.1) from s to t."""
    cs, ct = ev.coef(s), ev.coef(t)
    h = ct.lam - cs.lam
    phi_1 = math.expm1(h)
    base = math.exp(ct.log_alpha - cs.log_alpha) * x
    eps_s = ev.eps(x, s)
    if order == 1:
        return base - ct.sigma * phi_1 * eps_s
    s1 = ev.inverse_lambda(cs.lam + r1 * h)
    c1 = ev.coef(s1)
    u1 = math.exp(c1.log_alpha - cs.log_alpha) * x - c1.sigma * math.expm1(r1 * h) * eps_s
    eps_1 = ev.eps(u1, s1)
    if order == 2:
        return base - ct.sigma * phi_1 * eps_s - (0.5 / r1) * ct.sigma * phi_1 * (eps_1 - eps_s)
    s2 = ev.inverse_lambda(cs.lam + r2 * h)
    c2 = ev.coef(s2)
    phi_22 = math.expm1(r2 * h) / (r2 * h) - 1.0
    phi_2 = phi_1 / h - 1.0
    u2 = (
        math.exp(c2.log_alpha - cs.log_alpha) * x
        - c2.sigma * math.expm1(r2 * h) * eps_s
        - (r2 / r1) * c2.sigma * phi_22 * (eps_1 - eps_s)
    )
    eps_2 = ev.eps(u2, s2)
    return base - ct.sigma * phi_1 * eps_s - (1.0 / r2) * ct.sigma * phi_2 * (eps_2 - eps_s)


def _dpm_solver_pp_update(ev: _Evaluator, x, s: float, t: float, order: int, r1: float, r2: float):
    """One singlestep DPM-Solver++ update (data prediction, §5.2) from s to t."""
    cs, ct = ev.coef(s), ev.coef(t)
    h = ct.lam - cs.lam
    phi_1 = math.expm1(-h)
    base = (ct.sigma / cs.sigma) * x
    x0_s = ev.x0(x, s)
    if order == 1:
        return base - ct.alpha * phi_1 * x0_s
    s1 = ev.inverse_lambda(cs.lam + r1 * h)
    c1 = ev.coef(s1)
    u1 = (c1.sigma / cs.sigma) * x - c1.alpha * math.expm1(-r1 * h) * x0_s
    x0_1 = ev.x0(u1, s1)
    if order == 2:
        return base - ct.alpha * phi_1 * x0_s - (0.5 / r1) * ct.alpha * phi_1 * (x0_1 - x0_s)
    s2 = ev.inverse_lambda(cs.lam + r2 * h)
    c2 = ev.coef(s2)
    phi_22 = math.expm1(-r2 * h) / (r2 * h) + 1.0
    phi_2 = phi_1 / h + 1.0
    u2 = (
        (c2.sigma / cs.sigma) * x
        - c2.alpha * math.expm1(-r2 * h) * x0_s
        + (r2 / r1) * c2.alpha * phi_22 * (x0_1 - x0_s)
    )
    x0_2 = ev.x0(u2, s2)
    return base - ct.alpha * phi_1 * x0_s + (1.0 / r2) * ct.alpha * phi_2 * (x0_2 - x0_s)


def _dpm_solver_fast(ev: _Evaluator, x: torch.Tensor, steps: int, t_end: float) -> torch.Tensor:
    # K+1 outer times uniform in λ between λ(1) and λ(t_end); fixed r = (1/3, 2/3) or 1/2 (§5.1).
    orders = fast_orders(steps)
    lam_T, lam_0 = ev.coef(1.0).lam, ev.coef(t_end).lam
    lams = np.linspace(lam_T, lam_0, len(orders) + 1)
    times = [1.0, *(ev.inverse_lambda(float(v)) for v in lams[1:-1]), t_end]
    for k, order in enumerate(orders):
        r1, r2 = (1.0 / 3.0, 2.0 / 3.0) if order == 3 else (0.5, 0.0)
        x = _dpm_solver_update(ev, x, times[k], times[k + 1], order, r1, r2)
    return x


def _dpm_solver_pp_fast(ev: _Evaluator, x: torch.Tensor, steps: int, t_end: float) -> torch.Tensor:
    # steps+1 times uniform in t from 1 to t_end; an order-k step spans k grid intervals and takes
    # r_j = (λ_{i+j} − λ_i)/h from the grid, so its intermediate times land on the grid (§5.2).
    grid = np.linspace(1.0, t_end, steps + 1).tolist()
    lam = [ev.coef(t).lam for t in grid]
    i = 0
    for order in fast_orders(steps):
        h = lam[i + order] - lam[i]
        r1 = (lam[i + 1] - lam[i]) / h if order >= 2 else 0.0
        r2 = (lam[i + 2] - lam[i]) / h if order >= 3 else 0.0
        x = _dpm_solver_pp_update(ev, x, grid[i], grid[i + order], order, r1, r2)
        i += order
    return x


class SamplerSpec(NamedTuple):
    """A sampler: its integration routine and the paper's defaults (§3.3, §5)."""

    run: Callable  # (evaluator, x_T, steps, t_end, generator) -> x_0
    default_steps: int
    default_t_end: float  # euler_maruyama: smallest non-zero grid time; the others: final time
    min_steps: int = 1


# The one registry of samplers; parameters and validators take their names from here.
SAMPLERS: dict[str, SamplerSpec] = {
    "euler_maruyama": SamplerSpec(_euler_maruyama, 1000, 1e-3, min_steps=2),  # §5.1
    "dpm_solver": SamplerSpec(lambda ev, x, n, t, g: _dpm_solver_fast(ev, x, n, t), 50, 1e-4),
    "dpm_solver_pp": SamplerSpec(lambda ev, x, n, t, g: _dpm_solver_pp_fast(ev, x, n, t), 50, 1e-3),
}
DEFAULT_STEPS = {name: spec.default_steps for name, spec in SAMPLERS.items()}
DEFAULT_T_END = {name: spec.default_t_end for name, spec in SAMPLERS.items()}


@torch.no_grad()
def sample(
    eps_fn: EpsFn,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    sampler: str,
    steps: int | None = None,
    *,
    t_end: float | None = None,
    clip_x0: bool = False,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Integrate x_T (B, ...) from t = 1 to the data end with `sampler`; returns x_0 (B, ...).

    `steps` is the number of eps_fn evaluations (defaults: 1000 Euler–Maruyama, 50 DPM-Solver(++)).
    `t_end` defaults to 1e-3 (euler_maruyama grid start, dpm_solver_pp) or 1e-4 (dpm_solver).
    `clip_x0` clamps the implied x̂0 to [−1, 1] at every evaluation (off in the paper).
    `generator` drives the Euler–Maruyama noise (one randn(x.shape) per step except the last).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known: {list(SAMPLERS)}")
    spec = SAMPLERS[sampler]
    steps = spec.default_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < spec.min_steps:
        raise ValueError(
            f"steps must be an int >= {spec.min_steps} for sampler {sampler!r}, got {steps!r}"
        )
    t_end = spec.default_t_end if t_end is None else float(t_end)
    if not 0.0 < t_end < 1.0:
        raise ValueError(f"t_end must lie in (0, 1), got {t_end}")
    if not isinstance(x_T, torch.Tensor) or not x_T.is_floating_point() or x_T.ndim < 1:
        raise ValueError("x_T must be a floating-point tensor of shape (B, ...)")
    with tqdm(total=steps, desc=sampler, disable=not progress) as bar:
        ev = _Evaluator(eps_fn, schedule, clip_x0, bar)
        x = spec.run(ev, x_T, steps, t_end, generator)
    if ev.nfe != steps:  # internal invariant: the NFE budget is exactly `steps`
        raise RuntimeError(f"{sampler} used {ev.nfe} evaluations instead of {steps}")
    return x
