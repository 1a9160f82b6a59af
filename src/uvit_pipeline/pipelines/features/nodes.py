"""Nodes of the `features` pipeline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from uvit_pipeline.data.extract import extract_features, in_memory_source
from uvit_pipeline.pipelines.params import validate_features

STAGING = Path("data/04_feature/.staging")


def _staging_dir(meta: dict, manifest: pd.DataFrame) -> Path:
    """Same inputs and settings -> same staging folder, so a crashed extraction resumes there."""
    key = json.dumps(meta, sort_keys=True, default=str) + str(len(manifest))
    key += str(pd.util.hash_pandas_object(manifest[["path", "label"]], index=False).sum())
    return STAGING / hashlib.sha256(key.encode()).hexdigest()[:16]


def _latent_encoder(features: dict):
    """uint8 (B,3,R,R) -> moments (B,8,R/8,R/8) with the configured autoencoder, batched on the device."""
    import torch

    from uvit_pipeline.encoders.autoencoder import (
        autoencoder_identity,
        encode_moments,
        load_autoencoder_spec,
    )

    device = torch.device(features.get("device", "cpu"))
    vae = load_autoencoder_spec(features["autoencoder"], device)

    @torch.no_grad()
    def encode(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device).float() / 127.5 - 1.0
        return encode_moments(vae, x).float().cpu().numpy()

    return encode, autoencoder_identity(vae, features["autoencoder"])


def build_image_features(
    raw_root: str, image_manifest: pd.DataFrame, features: dict, data: dict
) -> str:
    """Manifest -> sharded feature store (pixels or VAE moments of original + flipped images)."""
    validate_features(features)
    meta = {
        "dataset": data.get("name", data["source"]),
        "source": data["source"],
        "kind": features["kind"],
        "resolution": features["resolution"],
        "crop": features["crop"],
    }
    encoder = None
    if features["kind"] == "latent_moments":
        encoder, identity = _latent_encoder(features)
        meta.update(
            flip="stored",
            encoder=identity["name"],
            encoder_sha256=identity["sha256"],
            scale_factor=features["scale_factor"],
        )
    else:
        meta.update(flip="random_at_train_time")
    array_source = in_memory_source(raw_root, data["source"], data["split"])
    out = extract_features(
        raw_root,
        image_manifest,
        _staging_dir(meta, image_manifest),
        meta=meta,
        crop=features["crop"],
        resolution=features["resolution"],
        shard_size=features["shard_size"],
        batch_size=features["batch_size"],
        workers=data["workers"],
        array_source=array_source,
        encoder=encoder,
    )
    return str(out)
