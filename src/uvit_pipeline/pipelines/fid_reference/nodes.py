"""Nodes of the `fid_reference` pipeline."""

from __future__ import annotations

import logging

import pandas as pd

from uvit_pipeline.metrics.demo_classifier import save_classifier, train_demo_classifier
from uvit_pipeline.metrics.network import write_network_dir
from uvit_pipeline.pipelines._references import (
    record_inception,
    reference_images,
    reference_statistics,
)
from uvit_pipeline.pipelines._staging import manifest_id, staging_dir

log = logging.getLogger(__name__)


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
    evaluation: dict,
    launcher: dict,
    paths: dict,
) -> dict:
    """The official statistics file of the experiment when it has one (paper numbers are computed
    against it, §6), else (mu, sigma) of the real images in the feature network's space, computed
    over every process of the `launcher` launch on `evaluation.device` (the device of scoring)."""
    if official_fid_stats is not None:
        log.info("Reference statistics: the official fid_stats file, imported as is")
        return official_fid_stats
    return reference_statistics(
        raw_images,
        image_manifest,
        feature_network,
        batch_size=fid_reference["batch_size"],
        limit=fid_reference["max_reference_images"],
        features=features,
        ingestion=ingestion,
        device=evaluation["device"],
        launcher=launcher,
        staging=paths["staging"],
    )
