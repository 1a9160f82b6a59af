"""Independent float64 re-derivations of the spec's samplers (docs/reference.md §4.1, §4.2, §5), for tests.

Schedules are recomputed with numpy from the spec's formulas; solvers are written step by step from the
formulas in §5.1/§5.2 without sharing code with `uvit_pipeline.diffusion`. `u2="midpoint"` swaps the
second intermediate point of the order-3 step for the one diffusers' singlestep scheduler uses.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BETA0, BETA1 = 0.1, 20.0


class RefVP:
    """VP SDE, closed forms of §4.1 / §5.1."""

    net_scale = 999.0

    def log_alpha(self, t: float) -> float:
        return -0.25 * t * t * (BETA1 - BETA0) - 0.5 * t * BETA0

    def beta(self, t: float) -> float:
        return BETA0 + t * (BETA1 - BETA0)

    def inverse_lambda(self, lam: float) -> float:
        log_term = math.log1p(math.exp(-2.0 * lam))
        d = BETA1 - BETA0
        return 2.0 * d * log_term / (math.sqrt(BETA0**2 + 2.0 * d * log_term) + BETA0) / d

    def alpha(self, t: float) -> float:
        return math.exp(self.log_alpha(t))

    def sigma(self, t: float) -> float:
        return math.sqrt(1.0 - math.exp(2.0 * self.log_alpha(t)))

    def lam(self, t: float) -> float:
        return math.log(self.alpha(t)) - math.log(self.sigma(t))


class RefDiscrete(RefVP):
    """SD scaled-linear chain as piecewise-linear log α over t_n = n/1000 (§4.2); t in [1/1000, 1]."""

    net_scale = 1000.0

    def __init__(self) -> None:
        betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
        self.t_knots = np.arange(1, 1001, dtype=np.float64) / 1000.0
        self.log_alpha_knots = 0.5 * np.cumsum(np.log(1.0 - betas))

    def log_alpha(self, t: float) -> float:
        assert 1e-3 - 1e-12 <= t <= 1.0 + 1e-12, t
        return float(np.interp(t, self.t_knots, self.log_alpha_knots))

    def beta(self, t: float) -> float:
        k = int(np.clip(np.searchsorted(self.t_knots, t, side="right") - 1, 0, 998))
        la, tk = self.log_alpha_knots, self.t_knots
        return float(-2.0 * (la[k + 1] - la[k]) / (tk[k + 1] - tk[k]))


def _fast_orders(steps: int) -> list[int]:
    k = steps // 3 + 1
    tail = {0: [2, 1], 1: [1], 2: [2]}[steps % 3]
    return [3] * (k - len(tail)) + tail


def _eval(eps_fn, x: torch.Tensor, t: float) -> torch.Tensor:
    return eps_fn(x, torch.full((x.shape[0],), t, dtype=torch.float64))


def ref_dpm_solver_pp(eps_fn, x, sch, steps=50, t_end=1e-3, u2="spec"):
    """§5.2: time-uniform grid, order-k steps over k grid intervals, data prediction."""
    grid = [1.0 + (t_end - 1.0) * i / steps for i in range(steps + 1)]

    def x0(y, t):
        return (y - sch.sigma(t) * _eval(eps_fn, y, t)) / sch.alpha(t)

    i = 0
    for order in _fast_orders(steps):
        s, t = grid[i], grid[i + order]
        h = sch.lam(t) - sch.lam(s)
        phi1 = math.exp(-h) - 1.0
        d_s = x0(x, s)
        x_next = sch.sigma(t) / sch.sigma(s) * x - sch.alpha(t) * phi1 * d_s
        if order >= 2:
            s1 = grid[i + 1]
            r1 = (sch.lam(s1) - sch.lam(s)) / h
            u1 = sch.sigma(s1) / sch.sigma(s) * x - sch.alpha(s1) * (math.exp(-r1 * h) - 1.0) * d_s
            d_1 = x0(u1, s1)
        if order == 2:
            x_next = x_next - 1.0 / (2.0 * r1) * sch.alpha(t) * phi1 * (d_1 - d_s)
        if order == 3:
            s2 = grid[i + 2]
            r2 = (sch.lam(s2) - sch.lam(s)) / h
            e2 = math.exp(-r2 * h) - 1.0
            u2_base = sch.sigma(s2) / sch.sigma(s) * x - sch.alpha(s2) * e2 * d_s
            if u2 == "spec":
                phi22 = e2 / (r2 * h) + 1.0
                u2_x = u2_base + r2 / r1 * sch.alpha(s2) * phi22 * (d_1 - d_s)
            else:
                u2_x = u2_base - 0.5 * sch.alpha(s2) * e2 * (r2 / r1) * (d_1 - d_s)
            d_2 = x0(u2_x, s2)
            phi2 = phi1 / h + 1.0
            x_next = x_next + 1.0 / r2 * sch.alpha(t) * phi2 * (d_2 - d_s)
        x, i = x_next, i + order
    return x


def ref_dpm_solver_times(sch, steps=50, t_end=1e-4):
    """Outer λ-uniform grid of DPM-Solver-fast and every evaluation time, in order (§5.1)."""
    orders = _fast_orders(steps)
    lam_T, lam_0 = sch.lam(1.0), sch.lam(t_end)
    lams = [lam_T + (lam_0 - lam_T) * k / len(orders) for k in range(len(orders) + 1)]
    return orders, lams


def ref_dpm_solver(eps_fn, x, sch, steps=50, t_end=1e-4, u2="spec"):
    """§5.1: DPM-Solver-fast, noise prediction, r = (1/3, 2/3) or 1/2 in λ."""
    orders, lams = ref_dpm_solver_times(sch, steps, t_end)
    for k, order in enumerate(orders):
        s = 1.0 if k == 0 else sch.inverse_lambda(lams[k])
        t = t_end if k == len(orders) - 1 else sch.inverse_lambda(lams[k + 1])
        h = sch.lam(t) - sch.lam(s)
        e_s = _eval(eps_fn, x, s)
        phi1 = math.exp(h) - 1.0
        x_next = sch.alpha(t) / sch.alpha(s) * x - sch.sigma(t) * phi1 * e_s
        r1 = 0.5 if order == 2 else 1.0 / 3.0
        r2 = 2.0 / 3.0
        if order >= 2:
            s1 = sch.inverse_lambda(sch.lam(s) + r1 * h)
            u1 = sch.alpha(s1) / sch.alpha(s) * x - sch.sigma(s1) * (math.exp(r1 * h) - 1.0) * e_s
            e_1 = _eval(eps_fn, u1, s1)
        if order == 2:
            x_next = x_next - 1.0 / (2.0 * r1) * sch.sigma(t) * phi1 * (e_1 - e_s)
        if order == 3:
            s2 = sch.inverse_lambda(sch.lam(s) + r2 * h)
            e2 = math.exp(r2 * h) - 1.0
            u2_base = sch.alpha(s2) / sch.alpha(s) * x - sch.sigma(s2) * e2 * e_s
            if u2 == "spec":
                u2_x = u2_base - r2 / r1 * sch.sigma(s2) * (e2 / (r2 * h) - 1.0) * (e_1 - e_s)
            else:
                u2_x = u2_base - 0.5 * sch.sigma(s2) * e2 * (r2 / r1) * (e_1 - e_s)
            e_2 = _eval(eps_fn, u2_x, s2)
            x_next = x_next - 1.0 / r2 * sch.sigma(t) * (phi1 / h - 1.0) * (e_2 - e_s)
        x = x_next
    return x


def ref_euler_maruyama(eps_fn, x, sch, noises, steps=1000, t_end=1e-3):
    """§5.1 reverse SDE, grid [0] ∪ linspace(t_end, 1, steps); `noises` in the order they are used."""
    grid = [0.0] + [t_end + (1.0 - t_end) * i / (steps - 1) for i in range(steps)]
    it = iter(noises)
    for i in range(steps, 0, -1):
        s, t = grid[i - 1], grid[i]
        b = sch.beta(t)
        drift = -0.5 * b * x + b * _eval(eps_fn, x, t) / sch.sigma(t)
        x = x + drift * (s - t)
        if s > 0:
            x = x + math.sqrt(b * (t - s)) * next(it)
    return x


# --- the pixel path of train.py / eval.py (§4.1, §4.3, §5.3, §7.1) -----------------------------------


def ref_pixels_to_model(images_uint8: np.ndarray) -> np.ndarray:
    """§7.1: uint8 HWC or CHW pixels -> x/127.5 − 1 in float64."""
    return np.asarray(images_uint8, dtype=np.float64) / 127.5 - 1.0


def ref_model_to_uint8(x: np.ndarray) -> np.ndarray:
    """§5.3: unpreprocess clamp(½(v+1), 0, 1), then save_image's floor(255·v + 0.5)."""
    v = np.clip(0.5 * (np.asarray(x, dtype=np.float64) + 1.0), 0.0, 1.0)
    return np.floor(255.0 * v + 0.5).astype(np.uint8)


def ref_vp_train_loss(eps_net, x0: np.ndarray, t: np.ndarray, noise: np.ndarray, labels=None):
    """§4.1 LSimple on one batch, float64: x_t = sqrt(ᾱ)x0 + sqrt(1−ᾱ)ε with ᾱ = exp(−B(t)),
    network time 999·t, per-sample mean of (ε − ε̂)² over C·H·W. `eps_net(x_t, 999t, labels)`
    takes and returns float64 numpy arrays. Returns the per-sample losses (B,)."""
    t = np.asarray(t, dtype=np.float64)
    abar = np.exp(-(BETA0 * t + (BETA1 - BETA0) * t**2 / 2.0)).reshape(-1, 1, 1, 1)
    x_t = np.sqrt(abar) * x0 + np.sqrt(1.0 - abar) * noise
    eps_hat = eps_net(x_t, 999.0 * t, labels)
    return ((noise - eps_hat) ** 2).reshape(len(t), -1).mean(axis=1)


def ref_drop_labels(
    labels: np.ndarray, uniforms: np.ndarray, p_uncond: float, k: int
) -> np.ndarray:
    """§4.3 CFGDataset: a label becomes the null class K when its uniform draw is < p_uncond."""
    return np.where(np.asarray(uniforms) < p_uncond, k, labels)
