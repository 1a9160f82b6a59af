"""`text_features`: captions -> text-encoder features for text-to-image training and evaluation."""

from kedro.pipeline import Pipeline, node

from .nodes import build_text_features


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                build_text_features,
                inputs=[
                    "image_manifest",
                    "image_features",
                    "text_encoder",
                    "params:text",
                    "params:model",
                    "params:launcher",
                    "params:paths",
                ],
                outputs="text_features",
                name="build_text_features",
            ),
        ],
        tags=["text_features"],
    )
