"""What the pipelines that read real images or the FID network share (fid_reference,
demo_autoencoder, import_pretrained): the training images as preprocessed for training, their
statistics in the feature network's space (over every process of the launch), and the recorded
Inception network."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from uvit_pipeline._io import atomic_write, read_json
from uvit_pipeline.data.extract import load_images
from uvit_pipeline.data.sources import array_source, training_rows
from uvit_pipeline.launch import LaunchSpec
from uvit_pipeline.metrics import blocks, fid
from uvit_pipeline.metrics.network import write_network_dir
from uvit_pipeline.pipelines._staging import manifest_id, staging_dir

log = logging.getLogger(__name__)
STANDARD_INCEPTION = "pytorch-fid"  # catalog `inception_weights: {source: pytorch-fid}`
# Real images per block of the reference statistics: fixed, so the blocks (and the numbers) do not
# depend on the number of processes; about 8 MB of float32 pool3 activations each.
REFERENCE_BLOCK_IMAGES = 1000


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


def reference_statistics(
    raw_images: str,
    manifest: pd.DataFrame,
    feature_network: str,
    *,
    batch_size: int,
    limit: int | None,
    features: dict,
    ingestion: dict,
    device: str,
    launcher: dict,
    staging: str,
) -> dict:
    """(mu, sigma) of the real training images (the first `limit` rows; preprocessed as for
    training) in the feature network's space, their activations computed in blocks of
    `REFERENCE_BLOCK_IMAGES` over every process of the `launcher` launch on `device`; a rerun
    after an interruption computes only the missing blocks. Unusable images are reported and
    skipped."""
    rows = training_rows(manifest, ingestion["source"])
    n = len(rows) if limit is None else min(limit, len(rows))
    if n < 2:
        raise ValueError(f"reference statistics need at least 2 images; the manifest gives {n}")
    info = read_json(Path(feature_network) / "network.json", "Re-run fid_reference")
    payload = {
        "network": str(feature_network),
        "batch_size": int(batch_size),
        "n": n,
        "block_size": REFERENCE_BLOCK_IMAGES,
        "raw_images": str(raw_images),
        "crop": features["crop"],
        "resolution": features["resolution"],
        "workers": ingestion["workers"],
        "source": ingestion["source"],
        "split": ingestion["split"],
        "checksum_algorithm": rows.attrs.get("checksum_algorithm"),
    }
    identity = {**payload, "network_info": info, "manifest": manifest_id(rows.iloc[:n])}
    folder = staging_dir(staging, "reference-blocks", identity)
    rows_file = folder / "rows.parquet"
    if not rows_file.is_file():  # what decoding a row reads: its file, checksum, array index
        kept = [c for c in ("path", "checksum", "index", "label") if c in rows.columns]
        table = rows.iloc[:n][kept].reset_index(drop=True)
        atomic_write(rows_file, lambda f: table.to_parquet(f))
    payload["manifest"] = str(rows_file)
    n_blocks = blocks.num_blocks(n, REFERENCE_BLOCK_IMAGES)
    launch = LaunchSpec.from_params(launcher)
    merged = blocks.compute_blocks(
        launch, "reference_part", payload, folder, n_blocks, device=device
    )
    skipped = merged["skipped"]
    if len(skipped):
        log.warning(
            "%d of %d reference images skipped (manifest rows %s...)",
            len(skipped),
            n,
            skipped[:5].tolist(),
        )
    mu, sigma = fid.statistics(merged["acts"])
    shutil.rmtree(folder)  # merged: its blocks served the resume; only machine 0 merges
    return {"mu": mu, "sigma": sigma, "network": info["network"]}
