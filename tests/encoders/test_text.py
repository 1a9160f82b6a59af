"""CLIP text encoder wrapper on a tiny random CLIPTextModel + BPE tokenizer saved to disk (§7.3)."""

from __future__ import annotations

import string

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from uvit_pipeline.encoders import text

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def tiny_tokenizer() -> CLIPTokenizer:
    """Byte-level BPE over lowercase letters with a few merges; every word ends in `</w>` like CLIP."""
    symbols = list(string.ascii_lowercase) + list(".,!")
    vocab = {BOS: 0, EOS: 1}
    for s in symbols:
        vocab[s] = len(vocab)
        vocab[s + "</w>"] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>")]
    for merged in ["th", "the</w>", "ca", "cat</w>"]:
        vocab[merged] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    tokenizer.save_pretrained(path)
    CLIPTextModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def encoder(encoder_dir):
    return text.load_text_encoder(encoder_dir)


def test_load_from_directory(encoder):
    assert encoder.hidden_size == 32
    assert not encoder.model.training
    assert all(not p.requires_grad for p in encoder.model.parameters())


def test_encode_prompts_shape_padding_truncation(encoder):
    prompts = ["the cat", "", "a green train is coming down the tracks. " * 20]  # last > 77 tokens
    feats = text.encode_prompts(encoder, prompts)
    assert feats.shape == (3, 77, 32) and feats.dtype == torch.float32
    ids = encoder.tokenizer(prompts, truncation=True, max_length=77, padding="max_length")[
        "input_ids"
    ]
    assert all(len(row) == 77 for row in ids)
    tok = encoder.tokenizer
    assert ids[1][:3] == [tok.bos_token_id, tok.eos_token_id, tok.eos_token_id]  # pad = end-of-text
    the, cat = tok.convert_tokens_to_ids("the</w>"), tok.convert_tokens_to_ids("cat</w>")
    assert ids[0][:4] == [tok.bos_token_id, the, cat, tok.eos_token_id]  # merges were applied
    # output = last_hidden_state of input_ids alone (no attention mask), as in the original
    with torch.no_grad():
        direct = encoder.model(input_ids=torch.tensor(ids)).last_hidden_state
    torch.testing.assert_close(feats, direct)


def test_padding_does_not_change_real_tokens(encoder):
    # CLIP's causal mask: states of the first tokens do not depend on how much padding follows
    full = text.encode_prompts(encoder, ["the cat"])
    short = text.encode_prompts(encoder, ["the cat"], max_length=8)
    assert short.shape == (1, 8, 32)
    torch.testing.assert_close(short, full[:, :8], rtol=1e-4, atol=1e-5)


def test_prompt_validation(encoder):
    with pytest.raises(ValueError, match="prompts"):
        text.encode_prompts(encoder, "a single string")
    with pytest.raises(ValueError, match="prompts"):
        text.encode_prompts(encoder, [])


# huggingface_hub warns about an argument diffusers still passes; unrelated to what is tested
@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument:UserWarning")
def test_load_errors_name_the_parameter(tmp_path):
    with pytest.raises(RuntimeError, match="features.text_encoder") as info:
        text.load_text_encoder("someorg/no-such-clip", local_files_only=True, cache_dir=tmp_path)
    assert "openai/clip-vit-large-patch14" in str(info.value)
    with pytest.raises(FileNotFoundError, match="features.text_encoder"):
        text.load_text_encoder(tmp_path / "missing")
