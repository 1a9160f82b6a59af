"""`fid_reference`: the metric's feature network and the real images' statistics (or the official file)."""

from kedro.pipeline import Node, Pipeline

from .nodes import compute_reference_stats, prepare_feature_network


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=prepare_feature_network,
                inputs=[
                    "raw_images",
                    "image_manifest",
                    "inception_weights",
                    "params:fid",
                    "params:features",
                    "params:data",
                    "params:paths",
                ],
                outputs="feature_network",
                name="prepare_feature_network",
            ),
            Node(
                func=compute_reference_stats,
                inputs=[
                    "raw_images",
                    "image_manifest",
                    "feature_network",
                    "official_fid_stats",
                    "params:fid",
                    "params:features",
                    "params:data",
                ],
                outputs="reference_stats",
                name="compute_reference_stats",
            ),
        ],
        tags=["fid_reference"],
    )
