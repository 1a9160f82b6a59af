"""CLIP score on a tiny random CLIPModel + processor saved to disk and loaded back."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from uvit_pipeline.metrics.clip_score import (
    ClipScorer,
    clip_score,
    clip_similarities,
    load_clip_scorer,
)

from ..conftest import tiny_clip_tokenizer as tiny_tokenizer

TEXTS = ["the cat", "a cat", "the the", "cat cat cat", "a", "the cat."]


def tiny_clip_dir(path):
    """A tiny random CLIPModel and its processor saved at `path` (save_pretrained)."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    CLIPModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return load_clip_scorer(tiny_clip_dir(tmp_path_factory.mktemp("clip") / "tiny-clip"))


def _images(n=6):
    return np.random.default_rng(0).integers(0, 256, (n, 3, 40, 48), dtype=np.uint8)


def test_pairs_are_scored_as_in_the_full_similarity_matrix(scorer):
    images = _images()
    inputs = scorer.processor(
        text=TEXTS, images=list(images.transpose(0, 2, 3, 1)), return_tensors="pt", padding=True
    )
    with torch.no_grad():
        out = scorer.model(**inputs)
    matrix = (out.image_embeds @ out.text_embeds.T).double().numpy()  # (images, texts)
    cos = clip_similarities(scorer, images, TEXTS, batch_size=4)  # two batches, the last short
    np.testing.assert_allclose(cos, np.diag(matrix), rtol=1e-5, atol=1e-6)
    perm = [3, 0, 5, 1, 4, 2]
    shuffled = clip_similarities(scorer, images, [TEXTS[i] for i in perm], batch_size=6)
    np.testing.assert_allclose(shuffled, matrix[np.arange(6), perm], rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(cos) <= 1 + 1e-6) and np.ptp(cos) > 0


def test_score_is_100_times_the_clamped_mean_and_named_by_network(scorer):
    images = _images()
    cos = clip_similarities(scorer, images, TEXTS)
    result = clip_score(scorer, images, TEXTS, batch_size=3)
    # a tiny random network is not ViT-L/14: its score must not be called clip_score
    assert set(result) == {"clip_score_substitute", "clip_model", "clip_score_n"}
    assert result["clip_score_substitute"] == pytest.approx(100 * np.maximum(cos, 0).mean())
    assert result["clip_score_n"] == 6 and result["clip_model"] == scorer.name


def test_vit_l14_architecture_is_named_clip_score():
    vision = dict(hidden_size=1024, patch_size=14, num_hidden_layers=24, image_size=224)
    l14 = CLIPConfig(vision_config=dict(vision, num_attention_heads=16), projection_dim=768)
    # the name depends only on the config: no need to build the 400M-parameter model
    assert ClipScorer(SimpleNamespace(config=l14), None, "x").metric_name == "clip_score"
    b32 = CLIPConfig(projection_dim=512)  # transformers' default: ViT-B/32
    assert ClipScorer(SimpleNamespace(config=b32), None, "x").metric_name != "clip_score"


def test_bad_inputs_and_offline_errors(scorer, tmp_path):
    with pytest.raises(ValueError, match="one per image"):
        clip_similarities(scorer, _images(), TEXTS[:2])
    with pytest.raises(ValueError, match="uint8"):
        clip_similarities(scorer, _images().astype(np.float32), TEXTS)
    with pytest.raises(FileNotFoundError, match="catalog entry `clip_model`"):
        load_clip_scorer(tmp_path / "missing")
    with pytest.raises(RuntimeError, match="huggingface-cli download"):
        load_clip_scorer("unit-test/not-cached-clip", local_files_only=True)
