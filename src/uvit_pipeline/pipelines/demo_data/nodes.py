"""Nodes of the `demo_data` pipeline."""

from __future__ import annotations

import tempfile
from pathlib import Path

from uvit_pipeline.data.demo import generate_demo_data

STAGING = Path("data/01_raw/.staging")


def generate_demo(demo: dict) -> tuple[str, str, str, dict]:
    """Write the synthetic set in the ImageNet and COCO 2014 layouts plus a tiny random autoencoder;
    the catalog moves each folder into place in one rename."""
    STAGING.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="demo-", dir=STAGING))
    summary = generate_demo_data(
        root, n_per_class=demo["n_per_class"], image_size=demo["image_size"], seed=demo["seed"]
    )
    # A random KL-f8-shaped VAE for the offline `demo_latent` environment: it exercises the real
    # loading/encoding/decoding code; its metrics say nothing about sample quality. Imported here
    # because diffusers is slow to import.
    from uvit_pipeline.encoders.autoencoder import tiny_autoencoder

    tiny_autoencoder(demo["seed"]).save_pretrained(root / "autoencoder")
    return str(root / "imagenet"), str(root / "coco"), str(root / "autoencoder"), summary
