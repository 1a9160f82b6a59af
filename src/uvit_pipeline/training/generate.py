"""Sample generation for evaluation: noise -> sampler -> (VAE decode) -> uint8 images (§5.3)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from uvit_pipeline.diffusion import make_eps_fn, sample


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 exactly as torchvision's save_image: floor(255·clamp(½(v+1)) + 0.5) (§5.3)."""
    return (images.float().add(1).mul(0.5).clamp(0, 1).mul(255).add(0.5).floor()).to(torch.uint8)


@torch.no_grad()
def generate_samples(
    nnet: torch.nn.Module,
    schedule,
    *,
    n: int,
    batch_size: int,
    sample_shape: tuple[int, int, int],
    sampler: str,
    steps: int,
    labels: torch.Tensor | None = None,
    null_label: int | None = None,
    cfg_scale: float = 0.0,
    clip_x0: bool = False,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Generate ``n`` images as uint8 (n, 3, H, W). ``labels`` (n,) for class-conditional models;
    ``decode`` maps latents to [-1, 1] images for latent models."""
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for lo in tqdm(range(0, n, batch_size), desc="sampling", unit="batch", disable=not progress):
        b = min(batch_size, n - lo)
        x_T = torch.randn((b, *sample_shape), generator=gen).to(device)
        cond = labels[lo : lo + b].to(device) if labels is not None else None
        null = None
        if cond is not None and cfg_scale > 0:
            null = torch.full_like(cond, null_label)
        eps_fn = make_eps_fn(nnet, schedule, cond=cond, null_cond=null, cfg_scale=cfg_scale)
        x0 = sample(eps_fn, x_T, schedule, sampler, steps, clip_x0=clip_x0, generator=gen)
        if decode is not None:
            x0 = decode(x0)
        out.append(quantize(x0).cpu().numpy())
    return np.concatenate(out)


def image_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """uint8 (N, 3, H, W) -> one uint8 (rows·H, columns·W, 3) image, row-major, 2 px white gutters."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    g = 2
    grid = np.full((rows * (h + g) + g, columns * (w + g) + g, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        grid[g + r * (h + g) : g + r * (h + g) + h, g + col * (w + g) : g + col * (w + g) + w] = (
            img.transpose(1, 2, 0)
        )
    return grid
