"""`demo_autoencoder`: the demo's own small KL autoencoder, trained on the demo images."""

from kedro.pipeline import Pipeline, node

from .nodes import train_demo_autoencoder


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_demo_autoencoder,
                inputs=[
                    "raw_images",
                    "image_manifest",
                    "params:demo_autoencoder",
                    "params:features",
                    "params:ingestion",
                    "params:paths",
                ],
                outputs=["autoencoder", "autoencoder_report", "autoencoder_reconstructions"],
                name="train_demo_autoencoder",
            ),
        ],
        tags=["demo_autoencoder"],
    )
