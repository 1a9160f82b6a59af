"""`generate`: images from a trained or imported checkpoint for chosen classes or prompts."""

from kedro.pipeline import Pipeline, node

from .nodes import generate_images

# The catalog entries that make up a generator: the checkpoint and what decodes and conditions it.
MODEL_ENTRIES = ["uvit_checkpoint", "image_features", "autoencoder", "decoder", "text_encoder"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                generate_images,
                inputs=[
                    *MODEL_ENTRIES,
                    "prompt_file",
                    "params:generate",
                    "params:launcher",
                    "params:paths",
                ],
                outputs=["generated_images", "generated_grid"],
                name="generate_images",
            ),
        ],
        tags=["generate"],
    )
