"""`ingestion`: raw data set -> `image_manifest` (parquet) + `ingestion_report` (rejected files, reasons)."""

from kedro.pipeline import Node, Pipeline

from .nodes import ingest_images


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=ingest_images,
                inputs=["raw_images", "params:data"],
                outputs=["image_manifest", "ingestion_report"],
                name="ingest_images",
            )
        ],
        tags=["ingestion"],
    )
