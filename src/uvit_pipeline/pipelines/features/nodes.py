"""Nodes of the `features` pipeline."""

from __future__ import annotations

import logging

import pandas as pd

from uvit_pipeline.data.extract import extract_features
from uvit_pipeline.data.sources import source_spec, training_rows
from uvit_pipeline.encoders import autoencoder as ae
from uvit_pipeline.launch import LaunchSpec
from uvit_pipeline.pipelines._staging import manifest_id, staging_dir

log = logging.getLogger(__name__)


def build_image_features(
    raw_images: str,
    image_manifest: pd.DataFrame,
    autoencoder: str | None,
    features: dict,
    ingestion: dict,
    launcher: dict,
    paths: dict,
) -> tuple[str, pd.DataFrame]:
    """Manifest -> sharded feature store: pixels, or VAE posterior moments of each image (and of its
    mirror image when `features.flip`, §7.1). COCO manifests hold both splits: the store holds the
    training images (val2014 only conditions evaluation samples through its captions). The work is
    spread over every process of the `launcher` section's launch, each with its own autoencoder on
    `features.device` (CPU processes, or one GPU each); the store is the same for any number."""
    image_manifest = training_rows(image_manifest, ingestion["source"])
    meta = {
        "source": ingestion["source"],
        "kind": features["kind"],
        "resolution": features["resolution"],
        "crop": features["crop"],
    }
    spec = LaunchSpec.from_params(launcher)  # bad launcher settings fail before any work
    moments_shape = None
    if features["kind"] == "latent_moments":
        if autoencoder is None:
            raise ValueError(
                "features.kind is latent_moments but the catalog entry `autoencoder` is not set "
                "for this environment"
            )
        # identity only, on the CPU: every process of the launch loads its own copy on its device
        identity = ae.autoencoder_identity(ae.load_autoencoder_spec(autoencoder), autoencoder)
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
        autoencoder = None
        meta.update(flip="random_at_train_time")
    identity = {
        **meta,
        "shard_size": features["shard_size"],
        "manifest": manifest_id(image_manifest),
    }
    out = staging_dir(paths["staging"], "features", identity)
    # a source held in memory (CIFAR-10's python batches) is read by every process itself
    in_memory = None
    if source_spec(ingestion["source"]).arrays is not None:
        in_memory = (ingestion["source"], ingestion["split"])
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
        array_from=in_memory,
        autoencoder=autoencoder,
        flip=features["flip"],
        moments_shape=moments_shape,
        return_report=True,
        launch=spec,
        device=features["device"],
    )
    if len(report):
        log.warning("%d images skipped by the feature extraction (feature_report)", len(report))
    return str(out), report.reset_index(drop=True)
