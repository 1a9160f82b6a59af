"""`text_features`: captions -> text-encoder features for text-to-image training and evaluation."""

from .._nodes import node, stage
from .nodes import build_text_features


def create_pipeline(**kwargs):
    return stage("text_features", node(build_text_features, "text_features"))
