"""Nodes of the `ingestion` pipeline."""

from __future__ import annotations

import logging

import pandas as pd

from uvit_pipeline.data.sources import scan

log = logging.getLogger(__name__)


def ingest_images(raw_images: str, ingestion: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw data set as downloaded -> (image manifest, report of rejected files with reasons)."""
    # The layout's scanner (data/sources.py); larger images than max_pixels are reported, skipped.
    manifest, report = scan(
        ingestion["source"],
        raw_images,
        ingestion["split"],
        ingestion["workers"],
        ingestion["max_pixels"],
    )
    manifest.attrs["raw_root"] = str(raw_images)
    log.info(
        "Ingested %d images from %s (%d files rejected, see ingestion_report)",
        len(manifest),
        raw_images,
        len(report),
    )
    return manifest, report.reset_index(drop=True)
