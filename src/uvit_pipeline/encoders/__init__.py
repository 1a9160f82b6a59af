"""Frozen encoders: SD KL-f8 autoencoder via diffusers (§4.5) and CLIP text encoder via transformers (§7.3)."""

from uvit_pipeline.encoders.autoencoder import (
    SD_VAE_IDS,
    autoencoder_identity,
    decode_latents,
    encode_moments,
    load_autoencoder,
    sample_latents,
    state_dict_sha256,
)
from uvit_pipeline.encoders.text import (
    CLIP_TEXT_ID,
    TextEncoder,
    encode_prompts,
    load_text_encoder,
)

__all__ = [
    "CLIP_TEXT_ID",
    "SD_VAE_IDS",
    "TextEncoder",
    "autoencoder_identity",
    "decode_latents",
    "encode_moments",
    "encode_prompts",
    "load_autoencoder",
    "load_text_encoder",
    "sample_latents",
    "state_dict_sha256",
]
