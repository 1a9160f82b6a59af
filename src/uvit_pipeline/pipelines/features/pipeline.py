"""`features`: manifest -> sharded feature store (pixels, or VAE posterior moments)."""

from kedro.pipeline import Pipeline, node

from .nodes import build_image_features


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                build_image_features,
                inputs=[
                    "raw_images",
                    "image_manifest",
                    "autoencoder",
                    "params:features",
                    "params:ingestion",
                    "params:launcher",
                    "params:paths",
                ],
                outputs=["image_features", "feature_report"],
                name="build_image_features",
            ),
        ],
        tags=["features"],
    )
