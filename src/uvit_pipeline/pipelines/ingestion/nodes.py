"""Nodes of the `ingestion` pipeline."""

from __future__ import annotations

import logging

import pandas as pd

from uvit_pipeline.data import ingest
from uvit_pipeline.data.coco import scan_coco

log = logging.getLogger(__name__)


def ingest_images(raw_images: str, ingestion: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw data set as downloaded -> (image manifest, report of rejected files with reasons)."""
    source, split, workers = ingestion["source"], ingestion["split"], ingestion["workers"]
    limit = {"max_pixels": ingestion["max_pixels"]}  # larger images are reported and skipped
    if source == "imagenet_folder":
        manifest, report = ingest.scan_imagenet_folder(
            raw_images, split=split, workers=workers, **limit
        )
    elif source == "cifar10":  # python batches as distributed: nothing to reject file by file
        _, _, manifest = ingest.read_cifar10(raw_images, split=split)
        report = pd.DataFrame({"path": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
    elif source == "celeba":
        manifest, report = ingest.scan_celeba(raw_images, split=split, workers=workers, **limit)
    else:  # COCO 2014, both splits: train images and captions, val captions for evaluation
        manifest, report = scan_coco(raw_images, workers=workers, **limit)
    manifest.attrs["raw_root"] = str(raw_images)
    log.info(
        "Ingested %d images from %s (%d files rejected, see ingestion_report)",
        len(manifest),
        raw_images,
        len(report),
    )
    return manifest, report.reset_index(drop=True)
