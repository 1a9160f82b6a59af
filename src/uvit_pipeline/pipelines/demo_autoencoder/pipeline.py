"""`demo_autoencoder`: the demo's own small KL autoencoder, trained on the demo images."""

from .._nodes import node, stage
from .nodes import train_demo_autoencoder


def create_pipeline(**kwargs):
    return stage(
        "demo_autoencoder",
        node(
            train_demo_autoencoder,
            ["autoencoder", "autoencoder_report", "autoencoder_reconstructions"],
        ),
    )
