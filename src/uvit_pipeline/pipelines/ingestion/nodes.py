"""Nodes of the `ingestion` pipeline."""

from __future__ import annotations

import logging

import pandas as pd

from uvit_pipeline.data import ingest
from uvit_pipeline.pipelines.params import validate_data

log = logging.getLogger(__name__)


def ingest_images(raw_root: str, data: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw data set as downloaded -> (image manifest, report of rejected files with reasons)."""
    validate_data(data)
    source = data["source"]
    if source == "imagenet_folder":
        manifest, report = ingest.scan_imagenet_folder(
            raw_root, split=data["split"], workers=data["workers"]
        )
    elif source == "cifar10":  # python batches as distributed: nothing to reject file by file
        _, _, manifest = ingest.read_cifar10(raw_root, split=data["split"])
        report = pd.DataFrame({"path": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
    elif source == "celeba":
        manifest, report = ingest.scan_celeba(
            raw_root, split=data["split"], workers=data["workers"]
        )
    else:  # COCO 2014: captions are kept in the manifest (caption_ids) for the text encoder
        manifest, report, _captions = ingest.scan_coco(
            raw_root, split=data["split"], workers=data["workers"]
        )
    log.info(
        "Ingested %d images from %s (%d files rejected, see ingestion_report)",
        len(manifest),
        raw_root,
        len(report),
    )
    return manifest, report.reset_index(drop=True)
