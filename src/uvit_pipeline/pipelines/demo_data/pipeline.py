"""`demo_data`: a seeded synthetic, labelled, captioned image set for the demo environments only."""

from .._nodes import node, stage
from .nodes import generate_demo


def create_pipeline(**kwargs):
    return stage(
        "demo_data",
        node(generate_demo, ["raw_images", "demo_data_summary"], name="generate_demo_data"),
    )
