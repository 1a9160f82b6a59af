"""`ingestion`: raw data set -> `image_manifest` (parquet) + `ingestion_report` (rejected files, reasons)."""

from .._nodes import node, stage
from .nodes import ingest_images


def create_pipeline(**kwargs):
    return stage("ingestion", node(ingest_images, ["image_manifest", "ingestion_report"]))
