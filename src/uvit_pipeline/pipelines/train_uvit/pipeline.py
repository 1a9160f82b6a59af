"""`train_uvit`: feature store + parameters -> `accelerate launch`ed U-ViT training -> versioned checkpoint."""

from kedro.pipeline import Pipeline, node

from .nodes import train_uvit


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_uvit,
                inputs=[
                    "image_features",
                    "text_features",
                    "params:model",
                    "params:training",
                    "params:launcher",
                    "params:features",
                    "params:paths",
                ],
                outputs=["uvit_checkpoint", "training_summary", "loss_curve"],
                name="train_uvit",
                tags=["launches_child"],
            ),
        ],
        tags=["train_uvit"],
    )
