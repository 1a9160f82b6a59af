"""`demo_data`: a seeded synthetic, labelled, captioned image set for the demo environments only."""

from kedro.pipeline import Pipeline, node

from .nodes import generate_demo


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                generate_demo,
                inputs=["params:demo_data", "params:paths"],
                outputs=["raw_images", "demo_data_summary"],
                name="generate_demo_data",
            ),
        ],
        tags=["demo_data"],
    )
