"""Nodes of the `demo_data` pipeline."""

from __future__ import annotations

import tempfile
from pathlib import Path

from uvit_pipeline.data.demo import generate_demo_data

STAGING = Path("data/01_raw/.staging")


def _tiny_autoencoder(out: Path, seed: int) -> None:
    """A randomly initialised KL-f8 AutoencoderKL (4 levels, 8 channels) for the offline latent demo.

    It exercises the real loading/encoding/decoding code; its latents carry no learned structure, so the
    `demo_latent` environment's metrics say nothing about sample quality."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 8, 8, 8),
        norm_num_groups=4,
        sample_size=32,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    vae.save_pretrained(out)


def generate_demo(demo: dict) -> tuple[str, str, str, dict]:
    """Write the synthetic set in the ImageNet and COCO 2014 layouts plus a tiny random autoencoder;
    the catalog moves each folder into place in one rename."""
    STAGING.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="demo-", dir=STAGING))
    summary = generate_demo_data(
        root, n_per_class=demo["n_per_class"], image_size=demo["image_size"], seed=demo["seed"]
    )
    _tiny_autoencoder(root / "autoencoder", demo["seed"])
    return str(root / "imagenet"), str(root / "coco"), str(root / "autoencoder"), summary
