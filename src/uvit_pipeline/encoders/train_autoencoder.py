"""Train the demo's small KL autoencoder on the demo images.

The model is a diffusers `AutoencoderKL`, the class of the SD KL-f8 VAE (§4.5), saved with
`save_pretrained` and read back through `load_autoencoder`, so the latent demo runs the real
encode -> moments -> sample -> decode path on latents that carry the images' shape and colour.
Objective as the LDM first stage without its perceptual and adversarial terms: per-image summed
reconstruction error + `kl_weight` x summed KL to N(0, I) (LDM's KL-f8 uses 1e-6), both divided by the
number of pixels. A randomly initialised VAE decodes every latent to noise, so no latent model
trained on its latents can show anything.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from .autoencoder import decode_latents, encode_moments

log = logging.getLogger(__name__)


def demo_autoencoder(
    downsample: int = 8,
    widths: tuple[int, ...] | list[int] | None = None,
    latent_channels: int = 4,
    layers_per_block: int = 1,
    seed: int = 0,
) -> AutoencoderKL:
    """A small `AutoencoderKL` with spatial downsampling factor `downsample` (a power of 2).

    `widths` has one channel count per level (log2(downsample) + 1 levels); default 16, 32, 64, 64...
    """
    levels = int(math.log2(downsample)) + 1 if downsample >= 1 else 0
    if downsample < 1 or 2 ** (levels - 1) != downsample:
        raise ValueError(f"autoencoder.downsample must be a power of 2, got {downsample}")
    widths = (
        tuple(widths) if widths is not None else tuple(min(16 * 2**i, 64) for i in range(levels))
    )
    if len(widths) != levels:
        raise ValueError(
            f"autoencoder.widths needs {levels} entries for downsample {downsample}, got {widths}"
        )
    groups = math.gcd(*widths, 8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(
            block_out_channels=widths,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            layers_per_block=layers_per_block,
            latent_channels=latent_channels,
            norm_num_groups=groups,
        )


def _to_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.float() / 127.5 - 1.0


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images_uint8: np.ndarray, batch_size: int = 100) -> np.ndarray:
    """uint8 (N, 3, H, W) -> uint8 reconstructions through the posterior mean (scale cancels)."""
    out = []
    for chunk in torch.from_numpy(np.ascontiguousarray(images_uint8)).split(batch_size):
        mean = encode_moments(vae, _to_unit(chunk)).chunk(2, dim=1)[0]
        x = decode_latents(vae, mean, 1.0, chunk_size=batch_size)
        out.append(x.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out).numpy()


def reconstruction_error(vae: AutoencoderKL, images_uint8: np.ndarray) -> dict:
    """MSE (on [0, 1] pixels) and PSNR (dB) of uint8 reconstructions."""
    rec = reconstruct(vae, images_uint8).astype(np.float64) / 255
    mse = float(np.mean((rec - images_uint8.astype(np.float64) / 255) ** 2))
    return {"mse": mse, "psnr_db": 10 * math.log10(1 / max(mse, 1e-12))}


@torch.no_grad()
def latent_std(vae: AutoencoderKL, images_uint8: np.ndarray) -> float:
    """Std of the posterior means: `1 / latent_std` puts the diffusion model's latents at unit scale
    (the role 0.18215 plays for the SD VAE, §4.5)."""
    x = _to_unit(torch.from_numpy(np.ascontiguousarray(images_uint8)))
    means = torch.cat([encode_moments(vae, c).chunk(2, dim=1)[0] for c in x.split(200)])
    return float(means.std())


def train_autoencoder(
    images_uint8: np.ndarray,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    kl_weight: float = 1e-6,
    downsample: int = 8,
    widths: tuple[int, ...] | list[int] | None = None,
    latent_channels: int = 4,
    layers_per_block: int = 1,
    held_out: int = 200,
    random_flip: bool = True,
    progress: bool = False,
) -> tuple[AutoencoderKL, dict]:
    """Train `demo_autoencoder(...)` on uint8 images (N, 3, H, W) -> (VAE in eval mode, report).

    The last `held_out` images (after a seeded shuffle) are kept out of training; the report holds
    their reconstruction MSE/PSNR before and after training, the latent std and the scale factor
    1/std to use as `features.scale_factor`.
    """
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected uint8 (N, 3, H, W), got {images.dtype} {images.shape}")
    if images.shape[-1] % downsample or images.shape[-2] % downsample:
        raise ValueError(
            f"image size {images.shape[-2:]} is not divisible by autoencoder.downsample={downsample}"
        )
    if steps < 1 or batch_size < 1 or lr <= 0 or kl_weight < 0:
        raise ValueError(
            "autoencoder: need steps >= 1, batch_size >= 1, lr > 0, kl_weight >= 0; got "
            f"{steps}, {batch_size}, {lr}, {kl_weight}"
        )
    if not 0 < held_out < len(images):
        raise ValueError(f"autoencoder.held_out must lie in (0, {len(images)}), got {held_out}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    train_x = torch.from_numpy(images[order[:-held_out]])
    test_x = images[order[-held_out:]]

    vae = demo_autoencoder(downsample, widths, latent_channels, layers_per_block, seed)
    before = reconstruction_error(vae.eval(), test_x)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    n_pix = images[0].size
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # posterior sampling noise
        for step in tqdm(range(steps), desc="autoencoder", disable=not progress):
            x = _to_unit(train_x[torch.randint(len(train_x), (batch_size,), generator=gen)])
            if random_flip:
                flip = torch.rand(batch_size, generator=gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            posterior = vae.encode(x).latent_dist
            rec = vae.decode(posterior.sample()).sample
            rec_loss = (rec - x).pow(2).flatten(1).sum(1)  # per image
            loss = (rec_loss + kl_weight * posterior.kl()).mean() / n_pix
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 200 == 0:
                log.debug("autoencoder step %d loss %.5f", step, loss.item())
    vae.eval().requires_grad_(False)
    after = reconstruction_error(vae, test_x)
    std = latent_std(vae, test_x)
    vae.register_to_config(scaling_factor=1.0 / std)  # informational; callers pass scale_factor
    report = {
        "steps": steps,
        "seconds": time.perf_counter() - t0,
        "held_out_images": held_out,
        "held_out_mse_untrained": before["mse"],
        "held_out_psnr_db_untrained": before["psnr_db"],
        "held_out_mse": after["mse"],
        "held_out_psnr_db": after["psnr_db"],
        "latent_std": std,
        "scale_factor": 1.0 / std,
        "downsample_factor": downsample,
        "latent_shape": [
            latent_channels,
            images.shape[-2] // downsample,
            images.shape[-1] // downsample,
        ],
    }
    log.info(
        "demo autoencoder: %d steps, held-out PSNR %.1f dB (untrained %.1f dB), latent std %.3f",
        steps,
        after["psnr_db"],
        before["psnr_db"],
        std,
    )
    return vae, report
