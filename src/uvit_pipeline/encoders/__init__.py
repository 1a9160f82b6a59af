"""Frozen encoders: SD KL-f8 autoencoder via diffusers (§4.5) and text encoders (CLIP / BERT-like) via transformers (§7.3).

Names are imported from their submodule on first use (PEP 562): the training loop's `sample_latents`
then costs neither a transformers nor a diffusers import in every training process.
"""

from __future__ import annotations

import importlib

_SUBMODULE = {
    **dict.fromkeys(
        (
            "SD_VAE_IDS",
            "autoencoder_identity",
            "decode_latents",
            "encode_moments",
            "load_autoencoder",
            "sample_latents",
            "state_dict_sha256",
        ),
        "autoencoder",
    ),
    **dict.fromkeys(
        (
            "CLIP_TEXT_ID",
            "DEMO_TEXT_ENCODER",
            "TextEncoder",
            "check_clip_dim",
            "encode_prompts",
            "load_text_encoder",
            "read_prompts",
            "resolve_text_encoder",
            "text_encoder_identity",
        ),
        "text",
    ),
}

__all__ = sorted(_SUBMODULE)


def __getattr__(name: str):
    if name not in _SUBMODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SUBMODULE[name]}"), name)
    globals()[name] = value  # later lookups (and monkeypatching) see a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULE})
