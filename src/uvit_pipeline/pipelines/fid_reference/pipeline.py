"""`fid_reference`: real images -> reference statistics (official .npz format), or an imported file."""

from kedro.pipeline import Node, Pipeline

from .nodes import compute_reference_stats, prepare_feature_network


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(prepare_feature_network, ["image_features", "params:fid"], "feature_network",
             name="prepare_feature_network"),
        Node(compute_reference_stats, ["image_features", "feature_network", "params:fid"], "reference_stats",
             name="compute_reference_stats"),
    ])
