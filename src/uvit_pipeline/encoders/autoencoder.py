"""Stable Diffusion KL-f8 image autoencoder through diffusers' `AutoencoderKL` (docs/reference.md §4.5).

Semantics follow the original `libs/autoencoder.py`: `encode_moments` returns the raw posterior moments
(B, 8, H/8, W/8) = [mean(4), logvar(4)] after `quant_conv`; sampling clamps logvar to [−30, 20] and scales by
`scale_factor` (0.18215, or 0.23010 for MS-COCO, §4.5); decoding divides by `scale_factor` and returns images
in ≈[−1, 1], not clamped. The scale factor is always a caller's parameter, never `vae.config.scaling_factor`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from uvit_pipeline._io import entry_load_error

if TYPE_CHECKING:  # diffusers is imported where a VAE is built, so latent sampling works without it
    from diffusers import AutoencoderKL

log = logging.getLogger(__name__)

# Hugging Face ids in diffusers format (see docs/metrics_and_encoders.md for what is and is not verified):
# the original SD v1 KL-f8 VAE (what `autoencoder_kl.pth` is described as) and the decoder-finetuned EMA VAE.
SD_VAE_IDS = {
    "autoencoder_kl": "CompVis/stable-diffusion-v1-4 (subfolder 'vae')",
    "autoencoder_kl_ema (presumed)": "stabilityai/sd-vae-ft-ema",
}
LOGVAR_RANGE = (-30.0, 20.0)  # §4.5


def _offline_message(name_or_path: str, reason: str) -> str:
    ids = "; ".join(f"{k}: {v}" for k, v in SD_VAE_IDS.items())
    return (
        f"catalog entry `autoencoder`/`decoder`: cannot load AutoencoderKL {name_or_path!r} "
        f"({reason}). Point the catalog entry (its `source`) at a local diffusers-format "
        "directory (config.json + diffusion_pytorch_model.safetensors) or at a Hugging Face id "
        "reachable from this machine. "
        f"Known ids for the U-ViT autoencoders: {ids}. Download once on a connected machine with "
        "`huggingface-cli download <id>` (or AutoencoderKL.from_pretrained(<id>).save_pretrained(<dir>))."
    )


def load_autoencoder(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
    subfolder: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> AutoencoderKL:
    """Load a diffusers `AutoencoderKL` from a local directory or a Hugging Face id (eval, no grads).

    `local_files_only=None` lets huggingface_hub decide (it honours `HF_HUB_OFFLINE`).
    """
    name = str(name_or_path)
    path = Path(name)
    if path.suffix in {".pth", ".ckpt", ".pt"}:
        raise ValueError(
            f"catalog entry `autoencoder`/`decoder`: {name} is an original LDM-format checkpoint; "
            "this pipeline needs diffusers-format weights (a directory with config.json or a "
            "Hugging Face id). " + _offline_message(name, "unsupported file format")
        )
    looks_local = path.is_absolute() or name.startswith((".", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise FileNotFoundError(
            f"catalog entry `autoencoder`/`decoder`: directory {path} does not exist"
        )
    # here, not at the top: sampling latents needs no diffusers, and it takes seconds to import
    from diffusers import AutoencoderKL

    kwargs = {"torch_dtype": dtype, "subfolder": subfolder, "cache_dir": cache_dir}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        vae = AutoencoderKL.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:  # not cached + offline, missing files, HTTP errors
        raise RuntimeError(_offline_message(name, str(err).splitlines()[0])) from err
    except Exception as err:  # a damaged weights file: UnpicklingError, safetensors errors, ...
        raise entry_load_error("autoencoder`/`decoder", name, err) from err
    if not vae.config.use_quant_conv:
        # §4.5: moments are taken after quant_conv (1×1, 8->8); a VAE without it is not the KL-f8 family
        raise ValueError(
            f"catalog entry `autoencoder`/`decoder`: {name} has no quant_conv; expected an SD "
            "KL-f8 VAE"
        )
    log.info("Loaded AutoencoderKL %s (%s)", name, dtype)
    return vae.to(device).eval().requires_grad_(False)


@torch.no_grad()
def encode_moments(vae: AutoencoderKL, x: torch.Tensor) -> torch.Tensor:
    """Raw posterior moments (B, 2·latent_channels, H/f, W/f) float32 of images x in [−1, 1] (B, 3, H, W)."""
    if x.ndim != 4 or x.shape[1] != vae.config.in_channels:
        raise ValueError(f"x: expected (B, {vae.config.in_channels}, H, W), got {tuple(x.shape)}")
    x = x.to(device=vae.device, dtype=vae.dtype)
    posterior = vae.encode(x).latent_dist
    # `.parameters` is quant_conv's output before diffusers clamps logvar; the original stores the raw
    # moments too and clamps only when sampling (§4.5)
    return posterior.parameters.float()


def sample_latents(
    moments: torch.Tensor, scale_factor: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """z = (mean + exp(½·clamp(logvar, −30, 20))·ε)·scale_factor in fp32 (B, C, h, w) (§4.5)."""
    if moments.ndim != 4 or moments.shape[1] % 2:
        raise ValueError(f"moments: expected (B, 2C, h, w), got {tuple(moments.shape)}")
    mean, logvar = moments.float().chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE))
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return (mean + std * eps) * scale_factor


@torch.no_grad()
def decode_latents(
    vae: AutoencoderKL,
    z: torch.Tensor,
    scale_factor: float,
    chunk_size: int = 50,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Images (B, 3, H, W) float32 in ≈[−1, 1] from scaled latents, `chunk_size` at a time (§5.3).

    The original decodes in chunks of 50 under fp16 autocast; pass `autocast_dtype=torch.float16` on GPU.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if z.ndim != 4 or z.shape[1] != vae.config.latent_channels:
        raise ValueError(
            f"z: expected (B, {vae.config.latent_channels}, h, w), got {tuple(z.shape)}"
        )
    device_type = vae.device.type
    outputs = []
    for chunk in z.split(chunk_size):
        chunk = (chunk / scale_factor).to(device=vae.device, dtype=vae.dtype)
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs.append(vae.decode(chunk).sample.float())
    return torch.cat(outputs)


def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 over (key, dtype, shape, raw bytes) of every state_dict tensor, in key order."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def autoencoder_identity(vae: AutoencoderKL, name_or_path: str | os.PathLike) -> dict:
    """JSON-friendly identity of an autoencoder for feature-store meta (name, weights sha256, config)."""
    cfg = vae.config
    return {
        "name": str(name_or_path),
        "class": type(vae).__name__,
        "sha256": state_dict_sha256(vae),
        "dtype": str(vae.dtype).removeprefix("torch."),
        "downsample_factor": 2 ** (len(cfg.block_out_channels) - 1),
        "latent_channels": int(cfg.latent_channels),
        "block_out_channels": [int(c) for c in cfg.block_out_channels],
        "layers_per_block": int(cfg.layers_per_block),
        "config_scaling_factor": float(cfg.scaling_factor),
    }


def load_autoencoder_spec(spec: str, device: str | torch.device = "cpu") -> AutoencoderKL:
    """Load from a parameter value: a local diffusers directory, a Hugging Face id, or `id:subfolder`
    (e.g. `CompVis/stable-diffusion-v1-4:vae`)."""
    name, subfolder = str(spec), None
    if ":" in name and not Path(name).exists():
        name, subfolder = name.split(":", 1)
    return load_autoencoder(name, device=device, subfolder=subfolder)


def tiny_autoencoder(seed: int = 0) -> AutoencoderKL:
    """A randomly initialised KL-f8-shaped AutoencoderKL (4 levels of width 8, 4 latent channels).

    For offline demos and tests of the real loading/encoding/decoding code: its latents carry no learned
    structure. The logvar biases are spread per channel so the posterior std differs between channels."""
    # here, not at the top: sampling latents needs no diffusers, and it takes seconds to import
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    with torch.no_grad():
        vae.quant_conv.bias[4:] = torch.tensor([-2.0, -1.0, 0.5, 1.0])
    return vae
