"""`demo_data`: a seeded synthetic, labelled, captioned image set in real ImageNet and COCO layouts."""

from kedro.pipeline import Node, Pipeline

from .nodes import generate_demo


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                generate_demo,
                "params:demo",
                ["raw_images", "raw_coco", "demo_autoencoder", "demo_data_summary"],
                name="generate_demo_data",
            ),
        ]
    )
