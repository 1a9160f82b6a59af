"""`import_pretrained`: an official U-ViT `.pth` and `fid_stats` `.npz` become versioned catalog entries.

Its outputs are those of `training` and `fid_reference`: run it instead of them (never together), then
`evaluation` reproduces the paper's number from the published weights.
"""

from kedro.pipeline import Node, Pipeline

from .nodes import import_pretrained


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=import_pretrained,
                inputs=[
                    "pretrained_checkpoint",
                    "official_fid_stats",
                    "inception_weights",
                    "params:import_pretrained",
                    "params:paths",
                ],
                outputs=["uvit_checkpoint", "reference_stats", "feature_network"],
                name="import_pretrained",
            )
        ],
        tags=["import_pretrained"],
    )
