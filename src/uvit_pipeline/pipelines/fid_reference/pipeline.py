"""`fid_reference`: real images -> reference statistics (official .npz format), or an imported file."""

from kedro.pipeline import Node, Pipeline

from .nodes import compute_reference_stats, prepare_feature_network


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                prepare_feature_network,
                ["raw_images", "image_manifest", "params:fid", "params:features", "params:data"],
                "feature_network",
                name="prepare_feature_network",
            ),
            Node(
                compute_reference_stats,
                [
                    "raw_images",
                    "image_manifest",
                    "feature_network",
                    "params:fid",
                    "params:features",
                    "params:data",
                ],
                "reference_stats",
                name="compute_reference_stats",
            ),
        ]
    )
