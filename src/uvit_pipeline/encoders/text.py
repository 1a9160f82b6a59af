"""Frozen CLIP text encoder for MS-COCO conditioning (uvit-reference §7.3).

Prompts are tokenised with truncation to 77 and padding="max_length" (pad = end-of-text), and the network sees
`input_ids` only — no attention mask, as in the Stable Diffusion-style `FrozenCLIPEmbedder` U-ViT uses; CLIP's
causal mask already keeps padding from changing the real tokens' states. The output is `last_hidden_state`
(after the final LayerNorm), (B, 77, 768) for `openai/clip-vit-large-patch14`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import CLIPTextModel, CLIPTokenizer

log = logging.getLogger(__name__)

CLIP_TEXT_ID = "openai/clip-vit-large-patch14"  # §7.3
MAX_LENGTH = 77  # §7.3


@dataclass
class TextEncoder:
    """A CLIP tokenizer and text model, frozen, plus where they came from."""

    tokenizer: CLIPTokenizer
    model: CLIPTextModel
    name: str

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def _offline_message(name: str, reason: str) -> str:
    return (
        f"features.text_encoder: cannot load CLIP text encoder {name!r} ({reason}). Set the parameter "
        "`features.text_encoder` to a local directory holding both the tokenizer and the text model "
        f"(save_pretrained output), or to a Hugging Face id reachable from this machine; U-ViT uses "
        f"{CLIP_TEXT_ID!r}. Download once on a connected machine with `huggingface-cli download "
        f"{CLIP_TEXT_ID}`."
    )


def load_text_encoder(
    name_or_path: str | os.PathLike = CLIP_TEXT_ID,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> TextEncoder:
    """Load `CLIPTokenizer` + `CLIPTextModel` from a Hugging Face id or local directory (eval, no grads)."""
    name = str(name_or_path)
    path = Path(name)
    looks_local = path.is_absolute() or name.startswith((".", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise FileNotFoundError(f"features.text_encoder: directory {path} does not exist")
    kwargs: dict = {"cache_dir": cache_dir}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        tokenizer = CLIPTokenizer.from_pretrained(name, **kwargs)
        model = CLIPTextModel.from_pretrained(name, dtype=dtype, **kwargs)
    except (OSError, ValueError) as err:  # not cached + offline, missing files, HTTP errors
        raise RuntimeError(_offline_message(name, str(err).splitlines()[0])) from err
    model = model.to(device).eval().requires_grad_(False)
    log.info("Loaded CLIP text encoder %s (hidden %d)", name, model.config.hidden_size)
    return TextEncoder(tokenizer=tokenizer, model=model, name=name)


@torch.no_grad()
def encode_prompts(
    encoder: TextEncoder, prompts: list[str], max_length: int = MAX_LENGTH
) -> torch.Tensor:
    """`last_hidden_state` (B, max_length, hidden) float32 for a list of prompts (§7.3)."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts: expected a list of strings")
    if not prompts:
        raise ValueError("prompts: empty list")
    tokens = encoder.tokenizer(
        list(prompts),
        truncation=True,
        max_length=max_length,
        padding="max_length",
        return_tensors="pt",
    )
    input_ids = tokens["input_ids"].to(encoder.device)  # (B, max_length)
    return encoder.model(input_ids=input_ids).last_hidden_state.float()  # (B, max_length, hidden)
