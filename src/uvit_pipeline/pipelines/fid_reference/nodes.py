"""Nodes of the `fid_reference` pipeline."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from uvit_pipeline.data.feature_store import FeatureStore
from uvit_pipeline.metrics.fid import load_stats, statistics
from uvit_pipeline.metrics.network import load_feature_network, write_network_dir
from uvit_pipeline.pipelines.validation import validate_fid

log = logging.getLogger(__name__)


def _store_images(store_path: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    store = FeatureStore(store_path)
    if store.meta["kind"] != "pixels":
        raise ValueError(f"Reference statistics are computed from a pixel feature store; '{store_path}' holds "
                         f"{store.meta['kind']}. Set fid.reference_stats_file to the official fid_stats .npz.")
    n = len(store) if limit is None else min(limit, len(store))
    return store.read_all("x")[:n], store.read_all("label")[:n]


def _new_dir() -> Path:
    Path("data/06_models").mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="feature-network-", dir=Path("data/06_models")))


def inception_network(fid: dict) -> str:
    """Record the FID Inception network (pytorch-fid weights: downloaded, or `fid.inception_weights`)."""
    from uvit_pipeline.metrics.fid import load_inception

    load_inception(fid.get("inception_weights"))  # fail here, early, when the weights are unavailable
    return str(write_network_dir(_new_dir(), {"network": "inception_v3_fid", "weights": fid.get("inception_weights")}))


def prepare_feature_network(image_features: str, fid: dict) -> str:
    """Demo: train the small classifier whose features define demo FD. Inception: record its weights."""
    validate_fid(fid)
    if fid["network"] == "inception_v3_fid":
        return inception_network(fid)
    out = _new_dir()
    from uvit_pipeline.metrics.demo_classifier import save_classifier, train_demo_classifier

    images, labels = _store_images(image_features, None)
    c = fid["classifier"]
    model, accuracy = train_demo_classifier(images, labels, steps=c["steps"], batch_size=c["batch_size"],
                                            lr=c["lr"], seed=c["seed"], progress=True)
    log.info("Demo classifier trained: accuracy %.3f on the training images", accuracy)
    save_classifier(out / "classifier.safetensors", model)
    write_network_dir(out, {"network": "demo_classifier", "train_accuracy": accuracy,
                            "num_classes": int(labels.max()) + 1})
    return str(out)


def compute_reference_stats(image_features: str, feature_network: str, fid: dict) -> dict:
    """Statistics (mu, sigma) of the real images in the feature network's space, or an official file."""
    validate_fid(fid)
    if fid.get("reference_stats_file"):
        mu, sigma = load_stats(fid["reference_stats_file"])
        log.info("Imported reference statistics %s as is", fid["reference_stats_file"])
        return {"mu": mu, "sigma": sigma, "network": "inception_v3_fid"}
    info, features, _ = load_feature_network(feature_network, batch_size=fid["batch_size"])
    images, _ = _store_images(image_features, fid.get("max_reference_images"))
    mu, sigma = statistics(features(images))
    return {"mu": mu, "sigma": sigma, "network": info["network"]}
