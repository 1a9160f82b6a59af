"""Noise schedules: the continuous VP SDE (§4.1) and the discrete SD-beta chain (§4.2).

Both expose the DPM-Solver view of a VP process on continuous time t ∈ [0, 1]:
α_t = sqrt(ᾱ(t)) (signal scale), σ_t = sqrt(1 − ᾱ(t)), λ_t = log α_t − log σ_t, and the map from t to the
network's timestep input (999·t for continuous models, 1000·t for discrete ones, §1.1).
Internally everything is computed in float64; results come back in the dtype of the input tensor.
"""

from __future__ import annotations

import math

import torch

__all__ = ["NoiseSchedule", "VPSDE", "DiscreteSchedule", "SCHEDULES", "get_schedule"]


def _f64(t: torch.Tensor | float) -> torch.Tensor:
    return torch.as_tensor(t).to(torch.float64)


def _out(value: torch.Tensor, like: torch.Tensor | float) -> torch.Tensor:
    """Cast a float64 result back to the caller's floating dtype (float32 for python scalars)."""
    if isinstance(like, torch.Tensor) and like.is_floating_point():
        return value.to(like.dtype)
    return value.to(torch.float32)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation on increasing knots xp, linear extrapolation outside (§4.2)."""
    xp, fp = xp.to(x.device), fp.to(x.device)
    # Segment k joins knots k and k+1; clamping the segment index to the first/last one extrapolates.
    k = (torch.searchsorted(xp, x.contiguous(), right=True) - 1).clamp(0, xp.numel() - 2)
    x0, x1, f0, f1 = xp[k], xp[k + 1], fp[k], fp[k + 1]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


class NoiseSchedule:
    """Base class: α, σ, λ and their inverse derived from `log_alpha`; subclasses define the rest."""

    name: str = ""
    #: multiplier from continuous t to the network's timestep input (§1.1)
    net_time_scale: float = 1.0

    def _log_alpha64(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _inverse_lambda64(self, lam: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _beta64(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """log α_t = ½ log ᾱ(t)."""
        return _out(self._log_alpha64(_f64(t)), t)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """α_t = sqrt(ᾱ(t)), the scale of x0 in x_t."""
        return _out(torch.exp(self._log_alpha64(_f64(t))), t)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """σ_t = sqrt(1 − ᾱ(t)), the scale of ε in x_t."""
        # -expm1 keeps precision for ᾱ close to 1 (small t).
        return _out(torch.sqrt(-torch.expm1(2.0 * self._log_alpha64(_f64(t)))), t)

    def lambda_(self, t: torch.Tensor) -> torch.Tensor:
        """Half log-SNR λ_t = log α_t − log σ_t."""
        la = self._log_alpha64(_f64(t))
        return _out(la - 0.5 * torch.log(-torch.expm1(2.0 * la)), t)

    def inverse_lambda(self, lam: torch.Tensor) -> torch.Tensor:
        """The time t with λ_t = lam."""
        return _out(self._inverse_lambda64(_f64(lam)), lam)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """β(t) = −2 d log α_t / dt, the diffusion rate of the VP SDE (used by Euler–Maruyama)."""
        return _out(self._beta64(_f64(t)), t)

    def net_time(self, t: torch.Tensor) -> torch.Tensor:
        """Continuous t -> the timestep value the network was trained with (§1.1)."""
        return t * self.net_time_scale

    def sample_train_t(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw training times -> (t_cont (B,) float32, net_timesteps (B,))."""
        raise NotImplementedError

    def train_alpha_sigma(
        self, t_cont: torch.Tensor, net_timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(α, σ) for the times returned by `sample_train_t`, each (B,) float32."""
        return self.alpha(t_cont.float()), self.sigma(t_cont.float())

    def marginal(
        self,
        x0: torch.Tensor,
        t_cont: torch.Tensor,
        noise: torch.Tensor,
        net_timesteps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_t = α_t x0 + σ_t ε for per-sample times t_cont (B,); x0, noise (B, ...)."""
        if net_timesteps is None:
            a, s = self.alpha(t_cont.float()), self.sigma(t_cont.float())
        else:
            a, s = self.train_alpha_sigma(t_cont, net_timesteps)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        a, s = a.to(x0.dtype).view(shape), s.to(x0.dtype).view(shape)
        return a * x0 + s * noise

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class VPSDE(NoiseSchedule):
    """Continuous-time VP SDE with linear β(t) = β0 + t(β1 − β0) (§4.1, `sde.py`)."""

    name = "vp_continuous"
    net_time_scale = 999.0  # continuous nets see 999·t (§1.1)

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0.0 <= beta_min < beta_max:
            raise ValueError(
                f"beta_min/beta_max must satisfy 0 <= beta_min < beta_max, got {beta_min}, {beta_max}"
            )
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def _log_alpha64(self, t: torch.Tensor) -> torch.Tensor:
        # log α_t = −¼ t² (β1 − β0) − ½ t β0 (§4.1)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _inverse_lambda64(self, lam: torch.Tensor) -> torch.Tensor:
        # Closed form (§5.1): L = log(1 + e^{−2λ}), t = 2L / (sqrt(β0² + 2(β1−β0)L) + β0).
        d = self.beta_max - self.beta_min
        log_term = torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)
        return 2.0 * log_term / (torch.sqrt(self.beta_min**2 + 2.0 * d * log_term) + self.beta_min)

    def _beta64(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def sample_train_t(self, batch, generator=None, device=None):
        # t ~ U[0, 1) per sample (t = 0 possible), network sees 999·t (§4.1).
        t = torch.rand(batch, generator=generator, device=device)
        return t, self.net_time(t)

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"


def sd_scaled_linear_betas(
    n: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """Stable-Diffusion 'scaled linear' betas β_1..β_n in float64 (§4.2)."""
    return torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), n, dtype=torch.float64) ** 2


class DiscreteSchedule(NoiseSchedule):
    """Discrete SD-beta chain n = 1..N wrapped as continuous time t_n = n/N (§4.2)."""

    name = "discrete"
    net_time_scale = 1000.0  # discrete nets see n ∈ 1..1000, i.e. 1000·t at sampling (§1.1)

    def __init__(self, num_steps: int = 1000) -> None:
        if num_steps < 2:
            raise ValueError(f"num_steps must be >= 2, got {num_steps}")
        self.num_steps = int(num_steps)
        betas = sd_scaled_linear_betas(self.num_steps)
        # Leading β_0 = 0 so index n of the tables is step n (ᾱ_0 = 1); §4.2.
        self.betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # (N+1,)
        # Knots of the continuous wrapper: t_n = n/N, log α_n = ½ Σ_{i≤n} log(1 − β_i), n = 1..N.
        self.t_knots = torch.arange(1, self.num_steps + 1, dtype=torch.float64) / self.num_steps
        self.log_alpha_knots = 0.5 * torch.cumsum(torch.log1p(-betas), dim=0)
        # log α decreases in t; the inverse interpolates the flipped table (§4.2).
        self._inv_x = torch.flip(self.log_alpha_knots, [0])
        self._inv_y = torch.flip(self.t_knots, [0])

    def _log_alpha64(self, t: torch.Tensor) -> torch.Tensor:
        return _interp(t, self.t_knots, self.log_alpha_knots)

    def _inverse_lambda64(self, lam: torch.Tensor) -> torch.Tensor:
        # λ -> log α = −½ log(1 + e^{−2λ}) -> t by interpolation.
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)
        return _interp(log_alpha, self._inv_x, self._inv_y)

    def _beta64(self, t: torch.Tensor) -> torch.Tensor:
        # −2 × slope of the piecewise-linear log α (constant per segment).
        xp, fp = self.t_knots.to(t.device), self.log_alpha_knots.to(t.device)
        k = (torch.searchsorted(xp, t.contiguous(), right=True) - 1).clamp(0, xp.numel() - 2)
        return -2.0 * (fp[k + 1] - fp[k]) / (xp[k + 1] - xp[k])

    def sample_train_t(self, batch, generator=None, device=None):
        # n ~ U{1..N}; the network gets the integer n (§4.2).
        n = torch.randint(1, self.num_steps + 1, (batch,), generator=generator, device=device)
        return n.float() / self.num_steps, n

    def train_alpha_sigma(self, t_cont, net_timesteps):
        """(α, σ) looked up exactly in the ᾱ table for integer steps n (§4.2)."""
        if net_timesteps.is_floating_point():
            return super().train_alpha_sigma(t_cont, net_timesteps)
        n = net_timesteps.long()
        # Range check on CPU tensors only: on a GPU it would cost two device syncs every step, and
        # training draws n in range by construction (`sample_train_t`).
        if (
            n.device.type == "cpu"
            and n.numel()
            and (int(n.min()) < 0 or int(n.max()) > self.num_steps)
        ):
            raise ValueError(
                f"net_timesteps must lie in 0..{self.num_steps}, got {n.min()}..{n.max()}"
            )
        abar = self.alphas_cumprod.to(n.device)[n]
        return abar.sqrt().float(), (1.0 - abar).sqrt().float()

    def __repr__(self) -> str:
        return f"DiscreteSchedule(num_steps={self.num_steps})"


SCHEDULES: dict[str, type[NoiseSchedule]] = {"vp_continuous": VPSDE, "discrete": DiscreteSchedule}


def get_schedule(name: str) -> NoiseSchedule:
    """Build a schedule by name ("vp_continuous" or "discrete")."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule name {name!r}; known: {sorted(SCHEDULES)}")
    return SCHEDULES[name]()
