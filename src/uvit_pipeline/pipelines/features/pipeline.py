"""`features`: manifest -> sharded feature store (pixels, or VAE posterior moments)."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_image_features


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=build_image_features,
                inputs=[
                    "raw_images",
                    "image_manifest",
                    "autoencoder",
                    "params:features",
                    "params:data",
                    "params:paths",
                ],
                outputs=["image_features", "feature_report"],
                name="build_image_features",
            )
        ],
        tags=["features"],
    )
