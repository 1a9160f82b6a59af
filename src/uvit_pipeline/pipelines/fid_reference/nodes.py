"""Nodes of the `fid_reference` pipeline."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from uvit_pipeline.data.extract import in_memory_source, load_images
from uvit_pipeline.metrics.fid import load_stats, statistics
from uvit_pipeline.metrics.network import load_feature_network, write_network_dir
from uvit_pipeline.pipelines.params import validate_fid

log = logging.getLogger(__name__)


def reference_images(
    raw_root: str, manifest: pd.DataFrame, features: dict, data: dict, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Real images preprocessed as for training (crop, resolution), uint8, with their labels."""
    images = load_images(
        raw_root,
        manifest,
        crop=features["crop"],
        resolution=features["resolution"],
        limit=limit,
        workers=data["workers"],
        array_source=in_memory_source(raw_root, data["source"], data["split"]),
    )
    return images, manifest["label"].to_numpy()[: len(images)]


def _new_dir() -> Path:
    Path("data/06_models").mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="feature-network-", dir=Path("data/06_models")))


def inception_network(fid: dict) -> str:
    """Record the FID Inception network (pytorch-fid weights: downloaded, or `fid.inception_weights`)."""
    from uvit_pipeline.metrics.fid import load_inception

    load_inception(
        fid.get("inception_weights")
    )  # fail here, early, when the weights are unavailable
    return str(
        write_network_dir(
            _new_dir(), {"network": "inception_v3_fid", "weights": fid.get("inception_weights")}
        )
    )


def prepare_feature_network(
    raw_images: str, image_manifest: pd.DataFrame, fid: dict, features: dict, data: dict
) -> str:
    """Demo: train the small classifier whose features define demo FD. Inception: record its weights."""
    validate_fid(fid)
    if fid["network"] == "inception_v3_fid":
        return inception_network(fid)
    out = _new_dir()
    from uvit_pipeline.metrics.demo_classifier import save_classifier, train_demo_classifier

    images, labels = reference_images(raw_images, image_manifest, features, data, None)
    c = fid["classifier"]
    model, accuracy = train_demo_classifier(
        images,
        labels,
        steps=c["steps"],
        batch_size=c["batch_size"],
        lr=c["lr"],
        seed=c["seed"],
        progress=True,
    )
    log.info("Demo classifier trained: accuracy %.3f on the training images", accuracy)
    save_classifier(out / "classifier.safetensors", model)
    write_network_dir(
        out,
        {
            "network": "demo_classifier",
            "train_accuracy": accuracy,
            "num_classes": int(labels.max()) + 1,
        },
    )
    return str(out)


def compute_reference_stats(
    raw_images: str,
    image_manifest: pd.DataFrame,
    feature_network: str,
    fid: dict,
    features: dict,
    data: dict,
) -> dict:
    """Statistics (mu, sigma) of the real images in the feature network's space, or an official file."""
    validate_fid(fid)
    if fid.get("reference_stats_file"):
        mu, sigma = load_stats(fid["reference_stats_file"])
        log.info("Imported reference statistics %s as is", fid["reference_stats_file"])
        return {"mu": mu, "sigma": sigma, "network": "inception_v3_fid"}
    info, features_fn, _ = load_feature_network(feature_network, batch_size=fid["batch_size"])
    images, _ = reference_images(
        raw_images, image_manifest, features, data, fid.get("max_reference_images")
    )
    mu, sigma = statistics(features_fn(images))
    return {"mu": mu, "sigma": sigma, "network": info["network"]}
