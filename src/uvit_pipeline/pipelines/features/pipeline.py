"""`features`: manifest -> sharded feature store (pixels, or VAE posterior moments)."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_image_features


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                build_image_features,
                ["raw_images", "image_manifest", "params:features", "params:data"],
                "image_features",
                name="build_image_features",
            ),
        ]
    )
