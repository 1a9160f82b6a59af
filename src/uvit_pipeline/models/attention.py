"""Multi-head self-attention with switchable kernels (docs/reference.md §1.3)."""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_BACKENDS = ("sdpa", "xformers", "math")


def check_backend(name: str) -> str:
    """Validate an attention backend name; raise if unknown or (xformers) not importable."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention must be one of {ATTENTION_BACKENDS}, got {name!r}")
    if name == "xformers" and importlib.util.find_spec("xformers") is None:
        raise ValueError(
            "attention='xformers' requested but the xformers package is not installed "
            "(pip install 'uvit_pipeline[xformers]' or use attention='sdpa')"
        )
    return name


def _xformers_ops():
    """`xformers.ops`, imported on first use (optional dependency). Not kept on the module instance:
    a module object there would make the model impossible to deep-copy (EMA copy, checkpointing)."""
    import xformers.ops as xops

    return xops


class Attention(nn.Module):
    """Self-attention with one fused qkv projection; keys `qkv`, `proj` as in the official model."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        backend: str = "sdpa",
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # §1.3: scale = Dh^-0.5 unless qk_scale overrides it.
        self.scale = qk_scale if qk_scale is not None else self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.backend = check_backend(backend)
        if backend == "xformers":
            _xformers_ops()  # fail at construction if the installed xformers is broken

    def set_backend(self, name: str) -> None:
        """Switch the attention kernel; parameters are untouched."""
        self.backend = check_backend(name)
        if name == "xformers":
            _xformers_ops()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        H, Dh = self.num_heads, self.head_dim
        # §1.3: qkv rows split as (3, H, Dh). Views only: q/k/v stay in the compute dtype
        # (the original casts them to float32 before SDPA; we deliberately do not, §8 trap 10).
        qkv = self.qkv(x).view(B, L, 3, H, Dh)  # (B, L, 3, H, Dh)
        if self.backend == "xformers":
            q, k, v = qkv.unbind(2)  # each (B, L, H, Dh)
            out = _xformers_ops().memory_efficient_attention(q, k, v, scale=self.scale)
            out = out.reshape(B, L, D)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, Dh)
            if self.backend == "sdpa":
                out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
            else:  # "math": explicit reference softmax(q k^T * scale) v
                attn = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, L, L)
                out = attn.softmax(dim=-1) @ v
            out = out.transpose(1, 2).reshape(B, L, D)  # head-major concat, (B, L, D)
        return self.proj(out)
