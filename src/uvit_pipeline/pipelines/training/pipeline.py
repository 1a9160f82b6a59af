"""`training`: feature store + parameters -> `accelerate launch`ed U-ViT training -> versioned checkpoint."""

from .._nodes import node, stage
from .nodes import train_uvit


def create_pipeline(**kwargs):
    return stage(
        "training",
        node(
            train_uvit,
            ["uvit_checkpoint", "training_summary", "loss_curve"],
            tags=["launches_child"],
        ),
    )
