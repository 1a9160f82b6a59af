"""`fid_reference`: the metric's feature network and the real images' statistics (or the official file)."""

from .._nodes import node, stage
from .nodes import compute_reference_stats, prepare_feature_network


def create_pipeline(**kwargs):
    return stage(
        "fid_reference",
        node(prepare_feature_network, "feature_network"),
        node(compute_reference_stats, "reference_stats"),
    )
