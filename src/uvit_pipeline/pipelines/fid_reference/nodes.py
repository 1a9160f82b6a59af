"""Nodes of the `fid_reference` pipeline."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from uvit_pipeline.data.extract import in_memory_source, load_images
from uvit_pipeline.metrics.fid import statistics
from uvit_pipeline.metrics.network import load_feature_network, write_network_dir
from uvit_pipeline.pipelines._staging import manifest_id, staging_dir

log = logging.getLogger(__name__)
STANDARD_INCEPTION = "pytorch-fid"  # catalog `inception_weights: {source: pytorch-fid}`


def reference_images(
    raw_images: str, manifest: pd.DataFrame, features: dict, ingestion: dict, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Real training images preprocessed as for training (crop, resolution), uint8, with their labels
    (COCO manifests: the train2014 split); files that changed since ingestion or stopped decoding
    are reported and skipped."""
    if "split" in manifest.columns:
        manifest = manifest[manifest["split"] == "train2014"].reset_index(drop=True)
    images, rows, report = load_images(
        raw_images,
        manifest,
        crop=features["crop"],
        resolution=features["resolution"],
        limit=limit,
        workers=ingestion["workers"],
        array_source=in_memory_source(raw_images, ingestion["source"], ingestion["split"]),
        return_report=True,
    )
    if len(report):
        log.warning("%d reference images skipped: %s", len(report), report.to_dict("records")[:5])
    return images, rows["label"].to_numpy()


def record_inception(inception_weights: str, paths: dict) -> str:
    """The FID Inception network: pytorch-fid's weights (cached/downloaded) or a local copy."""
    from uvit_pipeline.metrics.fid import load_inception

    weights = None if inception_weights == STANDARD_INCEPTION else inception_weights
    load_inception(weights)  # fail here, early, when the weights are unavailable
    out = staging_dir(paths["staging"], "inception", {"weights": weights})
    return str(write_network_dir(out, {"network": "inception_v3_fid", "weights": weights}))


def prepare_feature_network(
    raw_images: str,
    image_manifest: pd.DataFrame,
    inception_weights: str,
    fid_reference: dict,
    features: dict,
    ingestion: dict,
    paths: dict,
) -> str:
    """Demo: train the small classifier whose features define demo FD. Inception: record its weights."""
    if fid_reference["network"] == "inception_v3_fid":
        return record_inception(inception_weights, paths)
    from uvit_pipeline.metrics.demo_classifier import save_classifier, train_demo_classifier

    c = fid_reference["classifier"]
    identity = {"classifier": c, "manifest": manifest_id(image_manifest), **features}
    out = staging_dir(paths["staging"], "demo-classifier", identity)
    images, labels = reference_images(raw_images, image_manifest, features, ingestion, None)
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
    info = {
        "network": "demo_classifier",
        "train_accuracy": accuracy,
        "num_classes": int(labels.max()) + 1,
    }
    return str(write_network_dir(out, info))


def compute_reference_stats(
    raw_images: str,
    image_manifest: pd.DataFrame,
    feature_network: str,
    official_fid_stats: dict | None,
    fid_reference: dict,
    features: dict,
    ingestion: dict,
) -> dict:
    """The official statistics file of the experiment when it has one (paper numbers are computed
    against it, §6), else (mu, sigma) of the real images in the feature network's space."""
    if official_fid_stats is not None:
        log.info("Reference statistics: the official fid_stats file, imported as is")
        return official_fid_stats
    info, features_fn, _ = load_feature_network(
        feature_network, batch_size=fid_reference["batch_size"]
    )
    images, _ = reference_images(
        raw_images, image_manifest, features, ingestion, fid_reference["max_reference_images"]
    )
    mu, sigma = statistics(features_fn(images))
    return {"mu": mu, "sigma": sigma, "network": info["network"]}
