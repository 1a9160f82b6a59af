"""`fid_reference`: the metric's feature network and the real images' statistics (or the official file)."""

from kedro.pipeline import Pipeline, node

from .nodes import compute_reference_stats, prepare_feature_network


def create_pipeline(**kwargs) -> Pipeline:
    images = ["raw_images", "image_manifest"]
    settings = ["params:fid_reference", "params:features", "params:ingestion"]
    return Pipeline(
        [
            node(
                prepare_feature_network,
                inputs=[*images, "inception_weights", *settings, "params:paths"],
                outputs="feature_network",
                name="prepare_feature_network",
            ),
            node(
                compute_reference_stats,
                inputs=[
                    *images,
                    "feature_network",
                    "official_fid_stats",
                    *settings,
                    "params:evaluation",
                    "params:launcher",
                    "params:paths",
                ],
                outputs="reference_stats",
                name="compute_reference_stats",
            ),
        ],
        tags=["fid_reference"],
    )
