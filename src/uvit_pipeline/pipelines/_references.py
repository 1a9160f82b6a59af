"""What the pipelines that read real images or the FID network share (fid_reference,
demo_autoencoder, import_pretrained): the training images as preprocessed for training, and the
recorded Inception network."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from uvit_pipeline.data.extract import load_images
from uvit_pipeline.data.sources import array_source, training_rows
from uvit_pipeline.metrics import fid
from uvit_pipeline.metrics.network import write_network_dir
from uvit_pipeline.pipelines._staging import staging_dir

log = logging.getLogger(__name__)
STANDARD_INCEPTION = "pytorch-fid"  # catalog `inception_weights: {source: pytorch-fid}`


def reference_images(
    raw_images: str, manifest: pd.DataFrame, features: dict, ingestion: dict, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Real training images preprocessed as for training (crop, resolution), uint8, with their labels
    (COCO manifests: the train2014 split); files that changed since ingestion or stopped decoding
    are reported and skipped."""
    manifest = training_rows(manifest, ingestion["source"])
    images, rows, report = load_images(
        raw_images,
        manifest,
        crop=features["crop"],
        resolution=features["resolution"],
        limit=limit,
        workers=ingestion["workers"],
        array_source=array_source(ingestion["source"], raw_images, ingestion["split"]),
        return_report=True,
    )
    if len(report):
        log.warning("%d reference images skipped: %s", len(report), report.to_dict("records")[:5])
    return images, rows["label"].to_numpy()


def record_inception(inception_weights: str, paths: dict) -> str:
    """The FID Inception network: pytorch-fid's weights (cached/downloaded) or a local copy."""
    weights = None if inception_weights == STANDARD_INCEPTION else inception_weights
    fid.load_inception(weights)  # fail here, early, when the weights are unavailable
    out = staging_dir(paths["staging"], "inception", {"weights": weights})
    return str(write_network_dir(out, {"network": "inception_v3_fid", "weights": weights}))
