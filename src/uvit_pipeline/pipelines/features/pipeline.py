"""`features`: manifest -> sharded feature store (pixels, or VAE posterior moments)."""

from .._nodes import node, stage
from .nodes import build_image_features


def create_pipeline(**kwargs):
    return stage("features", node(build_image_features, ["image_features", "feature_report"]))
