"""`generate`: images from a trained or imported checkpoint for chosen classes or prompts."""

from .._nodes import node, stage
from .nodes import generate_images


def create_pipeline(**kwargs):
    return stage("generate", node(generate_images, ["generated_images", "generated_grid"]))
