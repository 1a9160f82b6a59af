"""`import_pretrained`: an official U-ViT `.pth` and `fid_stats` `.npz` become versioned catalog entries."""

from kedro.pipeline import Node, Pipeline

from ..fid_reference.nodes import inception_network
from .nodes import import_reference_stats, import_uvit_checkpoint


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                import_uvit_checkpoint,
                "params:import_pretrained",
                "uvit_checkpoint",
                name="import_uvit_checkpoint",
            ),
            Node(
                import_reference_stats,
                "params:import_pretrained",
                "reference_stats",
                name="import_reference_stats",
            ),
            Node(
                inception_network, "params:fid", "feature_network", name="record_inception_network"
            ),
        ]
    )
