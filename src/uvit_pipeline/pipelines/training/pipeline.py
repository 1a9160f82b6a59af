"""`training`: feature store + parameters -> `accelerate launch`ed U-ViT training -> versioned checkpoint."""

from kedro.pipeline import Node, Pipeline

from .nodes import train_uvit


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_uvit,
                [
                    "image_features",
                    "params:model",
                    "params:training",
                    "params:launcher",
                    "params:features",
                    "params:experiment",
                ],
                ["uvit_checkpoint", "training_summary"],
                name="train_uvit",
            ),
        ]
    )
