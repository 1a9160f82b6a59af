"""Classifier-free guidance and conditioning helpers (§4.3)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedules import NoiseSchedule

__all__ = ["make_eps_fn", "null_class_labels", "null_context"]


def _match_batch(cond: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """Broadcast a conditioning tensor with batch size 1 to `batch`."""
    if cond.shape[0] == batch:
        return cond
    if cond.shape[0] == 1:
        return cond.expand(batch, *cond.shape[1:])
    raise ValueError(f"{name} has batch size {cond.shape[0]}, expected 1 or {batch}")


def make_eps_fn(
    nnet: Callable[..., torch.Tensor],
    schedule: NoiseSchedule,
    cond: torch.Tensor | None = None,
    null_cond: torch.Tensor | None = None,
    cfg_scale: float = 0.0,
    batched: bool = False,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Build eps_fn(x, t_cont) -> ε̃ calling nnet(x, schedule.net_time(t), cond).

    With cfg_scale s > 0: ε̃ = (1+s)·ε_c − s·ε_u with ε_u = nnet(x, ·, null_cond) (§4.3; s = 0.4 means
    w = 1.4). The two passes are separate calls like the official eval, or one concatenated batch
    when `batched=True` (same result up to kernel non-determinism). `cond`/`null_cond` with batch
    size 1 are broadcast to the batch of x.
    """
    cfg_scale = float(cfg_scale)
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")
    if cfg_scale > 0 and (cond is None or null_cond is None):
        raise ValueError("cfg_scale > 0 needs both cond and null_cond")

    def eps_fn(x: torch.Tensor, t_cont: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        net_t = schedule.net_time(t_cont)
        c = None if cond is None else _match_batch(cond, batch, "cond")
        if cfg_scale == 0:
            return nnet(x, net_t, c)
        u = _match_batch(null_cond, batch, "null_cond")
        if batched:
            out = nnet(torch.cat([x, x]), torch.cat([net_t, net_t]), torch.cat([c, u]))
            eps_c, eps_u = out[:batch], out[batch:]
        else:
            eps_c, eps_u = nnet(x, net_t, c), nnet(x, net_t, u)
        return (1.0 + cfg_scale) * eps_c - cfg_scale * eps_u

    return eps_fn


def null_class_labels(batch: int, num_real_classes: int, device=None) -> torch.Tensor:
    """Labels of the null class K (= num_real_classes, e.g. 1000 of 1001 embeddings), shape (B,)."""
    if num_real_classes < 1:
        raise ValueError(f"num_real_classes must be >= 1, got {num_real_classes}")
    return torch.full((batch,), num_real_classes, dtype=torch.long, device=device)


def null_context(empty_context: torch.Tensor, batch: int) -> torch.Tensor:
    """The encoded empty prompt (L, D) or (1, L, D) broadcast to (B, L, D) (§4.3, not zeros)."""
    if empty_context.ndim == 2:
        empty_context = empty_context.unsqueeze(0)
    if empty_context.ndim != 3 or empty_context.shape[0] != 1:
        raise ValueError(
            f"empty_context must have shape (L, D) or (1, L, D), got {tuple(empty_context.shape)}"
        )
    return empty_context.expand(batch, -1, -1)
