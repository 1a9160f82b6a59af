"""Shared test setup: telemetry off, quiet, deterministic, small thread pools."""

import os

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def vae_dir(tmp_path_factory):
    """Tiny KL-f8-shaped VAE (4 levels -> f=8, 4 latent channels), saved in diffusers format."""
    from uvit_pipeline.encoders.autoencoder import tiny_autoencoder

    path = tmp_path_factory.mktemp("vae") / "tiny-kl-f8"
    tiny_autoencoder(seed=0).save_pretrained(path)
    return path


def tiny_clip_tokenizer():
    """Byte-level BPE over lowercase letters with a few merges; every word ends in `</w>` like CLIP."""
    import string

    from transformers import CLIPTokenizer

    bos, eos = "<|startoftext|>", "<|endoftext|>"
    vocab = {bos: 0, eos: 1}
    for s in list(string.ascii_lowercase) + list(".,!"):
        vocab[s] = len(vocab)
        vocab[s + "</w>"] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>")]
    for merged in ["th", "the</w>", "ca", "cat</w>"]:
        vocab[merged] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def save_tiny_clip(path, hidden_size: int = 32, seed: int = 0):
    """A 2-layer random `CLIPTextModel` + the tiny tokenizer, saved with save_pretrained into `path`."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    tokenizer.save_pretrained(path)
    CLIPTextModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    """Tiny random CLIP text encoder (hidden 32) + BPE tokenizer, saved in Hugging Face layout."""
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")
