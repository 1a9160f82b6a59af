"""Frozen encoders: SD KL-f8 autoencoder via diffusers (§4.5) and text encoders (CLIP / BERT-like) via transformers (§7.3)."""

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
    DEMO_TEXT_ENCODER,
    TextEncoder,
    check_clip_dim,
    encode_prompts,
    load_text_encoder,
    read_prompts,
    resolve_text_encoder,
    text_encoder_identity,
)

__all__ = [
    "CLIP_TEXT_ID",
    "DEMO_TEXT_ENCODER",
    "SD_VAE_IDS",
    "TextEncoder",
    "autoencoder_identity",
    "check_clip_dim",
    "decode_latents",
    "encode_moments",
    "encode_prompts",
    "load_autoencoder",
    "load_text_encoder",
    "read_prompts",
    "resolve_text_encoder",
    "sample_latents",
    "state_dict_sha256",
    "text_encoder_identity",
]
