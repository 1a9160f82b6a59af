"""Analytic compute and parameter counts of a UViT forward pass (docs/reference.md §2.4, §9)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from .config import UViTConfig

# Defaults of the UViT constructor (the original's, §1); the geometry below must be stated.
_DEFAULTS = UViTConfig().to_dict()
_REQUIRED = ("img_size", "patch_size", "embed_dim", "depth")


def _config(model_or_kwargs) -> dict:
    if isinstance(model_or_kwargs, nn.Module):
        cfg = getattr(model_or_kwargs, "config", None)
        if cfg is None:
            raise ValueError("model has no `config` attribute; pass the constructor kwargs instead")
    elif isinstance(model_or_kwargs, UViTConfig):
        cfg = model_or_kwargs.to_dict()
    elif isinstance(model_or_kwargs, Mapping):
        cfg = model_or_kwargs
    else:
        raise ValueError(
            f"expected a UViT, a UViTConfig or a dict of its kwargs, got {type(model_or_kwargs).__name__}"
        )
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"model kwargs lack {', '.join(missing)}")
    return {**_DEFAULTS, **cfg}


def _dims(c: dict) -> tuple[int, int, int, int, int, int]:
    D, p, C = c["embed_dim"], c["patch_size"], c["in_chans"]
    N = (c["img_size"] // p) ** 2
    T = c["num_clip_token"] if c["clip_dim"] is not None else 0
    extras = 1 + (1 if c["num_classes"] > 0 else 0) + T  # §1.2
    return D, p, C, N, extras + N, 2 * (c["depth"] // 2) + 1


def count_flops(model_or_kwargs, batch: int = 1) -> float:
    """Multiply-accumulates (MACs) of one forward pass for `batch` samples.

    Counted: every Linear (qkv, proj, fc1, fc2, skip_linear, decoder_pred, context_embed,
    time MLP), both attention matmuls (q k^T and attn v, 2 L^2 D per block), the patch-embedding
    conv and the final 3x3 conv. Not counted: biases, LayerNorm, softmax, GELU, residual adds,
    embedding lookups, the sinusoid. Note decoder_pred runs on all L tokens (extras included).
    Multiply by 2 for FLOPs; a training step (fwd + bwd) is ~3x the forward.
    """
    c = _config(model_or_kwargs)
    D, p, C, N, L, n_blocks = _dims(c)
    hidden = int(D * c["mlp_ratio"])
    macs = N * D * C * p * p  # patch_embed conv (stride = kernel: one MAC per weight per patch)
    if c["mlp_time_embed"]:
        macs += 8 * D * D
    if c["clip_dim"] is not None:
        macs += c["num_clip_token"] * c["clip_dim"] * D
    per_block = L * (4 * D * D + 2 * D * hidden) + 2 * L * L * D  # qkv+proj, mlp, attention
    macs += n_blocks * per_block
    if c["skip"]:
        macs += (c["depth"] // 2) * L * 2 * D * D  # skip_linear in each out-block
    macs += L * D * p * p * C  # decoder_pred
    if c["conv"]:
        macs += c["img_size"] ** 2 * C * C * 9  # final_layer 3x3 conv
    return float(macs * batch)


def train_step_flops(model_or_kwargs, batch: int) -> float:
    """FLOPs of one training step: 2 FLOPs per MAC x 3 (forward + backward); checkpoint recompute excluded."""
    return 6.0 * count_flops(model_or_kwargs, batch)


def mfu(flops_per_step: float, steps_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s divided by the hardware peak FLOP/s."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be > 0, got {peak_flops!r}")
    return flops_per_step * steps_per_s / peak_flops


def count_params(model_or_kwargs) -> int:
    """Analytic parameter count (§2.4), equal to sum(p.numel()) of the constructed model."""
    c = _config(model_or_kwargs)
    D, p, C, N, L, n_blocks = _dims(c)
    hidden = int(D * c["mlp_ratio"])
    block = 3 * D * D + (3 * D if c["qkv_bias"] else 0)  # qkv
    block += D * D + D + 2 * D * hidden + hidden + D + 4 * D  # proj, fc1, fc2, two LayerNorms
    n = D * C * p * p + D + L * D  # patch_embed + pos_embed
    if c["mlp_time_embed"]:
        n += 8 * D * D + 5 * D
    if c["num_classes"] > 0:
        n += c["num_classes"] * D
    if c["clip_dim"] is not None:
        n += c["clip_dim"] * D + D
    n += n_blocks * block
    if c["skip"]:
        n += (c["depth"] // 2) * (2 * D * D + D)
    n += 2 * D + D * p * p * C + p * p * C  # norm, decoder_pred
    if c["conv"]:
        n += 9 * C * C + C
    return n
