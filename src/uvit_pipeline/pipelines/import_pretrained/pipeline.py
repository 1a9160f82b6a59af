"""`import_pretrained`: an official U-ViT `.pth` and `fid_stats` `.npz` become versioned catalog entries.

Its outputs are those of `training` and `fid_reference`: run it instead of them (never together), then
`evaluation` reproduces the paper's number from the published weights.
"""

from kedro.pipeline import Pipeline, node

from .nodes import import_official_files


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                import_official_files,
                inputs=[
                    "pretrained_checkpoint",
                    "official_fid_stats",
                    "inception_weights",
                    "params:import_pretrained",
                    "params:model",
                    "params:paths",
                ],
                outputs=["uvit_checkpoint", "reference_stats", "feature_network"],
                name="import_pretrained",
            ),
        ],
        tags=["import_pretrained"],
    )
