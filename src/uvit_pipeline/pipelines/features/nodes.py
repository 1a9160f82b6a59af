"""Nodes of the `features` pipeline."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from uvit_pipeline.data.extract import extract_features
from uvit_pipeline.data.sources import array_source, training_rows
from uvit_pipeline.encoders import autoencoder as ae
from uvit_pipeline.pipelines._staging import manifest_id, staging_dir

log = logging.getLogger(__name__)


def _latent_encoder(autoencoder: str, device_name: str):
    """uint8 (B,3,R,R) -> moments (B,2C,R/f,R/f) with the given autoencoder (C latent channels,
    downsampling f: (B,8,R/8,R/8) for the SD KL-f8 VAE), batched on the device."""
    device = torch.device(device_name)
    vae = ae.load_autoencoder_spec(autoencoder, device)

    @torch.no_grad()
    def encode(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(device).float() / 127.5 - 1.0
        return ae.encode_moments(vae, x).float().cpu().numpy()

    return encode, ae.autoencoder_identity(vae, autoencoder)


def build_image_features(
    raw_images: str,
    image_manifest: pd.DataFrame,
    autoencoder: str | None,
    features: dict,
    ingestion: dict,
    paths: dict,
) -> tuple[str, pd.DataFrame]:
    """Manifest -> sharded feature store: pixels, or VAE posterior moments of each image (and of its
    mirror image when `features.flip`, §7.1). COCO manifests hold both splits: the store holds the
    training images (val2014 only conditions evaluation samples through its captions)."""
    image_manifest = training_rows(image_manifest, ingestion["source"])
    meta = {
        "source": ingestion["source"],
        "kind": features["kind"],
        "resolution": features["resolution"],
        "crop": features["crop"],
    }
    encoder, moments_shape = None, None
    if features["kind"] == "latent_moments":
        if autoencoder is None:
            raise ValueError(
                "features.kind is latent_moments but the catalog entry `autoencoder` is not set "
                "for this environment"
            )
        encoder, identity = _latent_encoder(autoencoder, features["device"])
        if features["resolution"] % identity["downsample_factor"]:
            raise ValueError(
                f"features.resolution ({features['resolution']}) must be a multiple of the "
                f"autoencoder's downsampling factor {identity['downsample_factor']} ({autoencoder})"
            )
        side = features["resolution"] // identity["downsample_factor"]
        moments_shape = (2 * identity["latent_channels"], side, side)
        meta.update(
            flip="stored" if features["flip"] else "none",
            encoder=identity["name"],
            encoder_sha256=identity["sha256"],
            scale_factor=features["scale_factor"],
        )
    else:
        meta.update(flip="random_at_train_time")
    identity = {
        **meta,
        "shard_size": features["shard_size"],
        "manifest": manifest_id(image_manifest),
    }
    out = staging_dir(paths["staging"], "features", identity)
    _, report = extract_features(
        raw_images,
        image_manifest,
        out,
        meta=meta,
        crop=features["crop"],
        resolution=features["resolution"],
        shard_size=features["shard_size"],
        batch_size=features["batch_size"],
        workers=ingestion["workers"],
        array_source=array_source(ingestion["source"], raw_images, ingestion["split"]),
        encoder=encoder,
        flip=features["flip"],
        moments_shape=moments_shape,
        return_report=True,
    )
    if len(report):
        log.warning("%d images skipped by the feature extraction (feature_report)", len(report))
    return str(out), report.reset_index(drop=True)
