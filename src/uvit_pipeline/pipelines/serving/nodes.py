"""Nodes of the `serving` pipeline."""

from __future__ import annotations

from uvit_pipeline.models.checkpoint import read_checkpoint_info
from uvit_pipeline.sampling import class_names


def generator_spec(
    uvit_checkpoint: str,
    image_features: str | None,
    autoencoder: str | None,
    decoder: str | None,
    text_encoder: str | None,
    generate: dict,
) -> dict:
    """What `UViTGenerator.from_pretrained` needs to rebuild the experiment's generator: the
    checkpoint, the autoencoder that decodes a latent model's samples, a text model's encoder, the
    class names and the `generate` sampler settings as defaults. The catalog entry
    `generator_model` (`serving.GeneratorModelDataset`) logs it as an MLflow model."""
    info = read_checkpoint_info(uvit_checkpoint)
    n_real = info.num_real_classes
    return {
        "checkpoint": str(uvit_checkpoint),
        "autoencoder": (decoder or autoencoder) if info.is_latent else None,
        "text_encoder": text_encoder if info.is_text else None,
        "class_names": class_names(image_features, n_real) if n_real else None,
        "defaults": {
            "sampler": generate["sampler"],
            "steps": generate["steps"],
            "guidance": generate["cfg_scale"],
        },
    }
