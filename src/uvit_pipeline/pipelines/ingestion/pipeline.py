"""`ingestion`: raw data set -> `image_manifest` (parquet) + `ingestion_report` (rejected files, reasons)."""

from kedro.pipeline import Pipeline, node

from .nodes import ingest_images


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                ingest_images,
                inputs=["raw_images", "params:ingestion"],
                outputs=["image_manifest", "ingestion_report"],
                name="ingest_images",
            ),
        ],
        tags=["ingestion"],
    )
