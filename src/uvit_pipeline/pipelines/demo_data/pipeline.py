"""`demo_data`: a seeded synthetic, labelled, captioned image set for the demo environments only."""

from kedro.pipeline import Node, Pipeline

from .nodes import generate_demo


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=generate_demo,
                inputs=["params:demo", "params:paths"],
                outputs=["raw_images", "demo_data_summary"],
                name="generate_demo_data",
            )
        ],
        tags=["demo_data"],
    )
