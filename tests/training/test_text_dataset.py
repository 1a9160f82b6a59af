"""CaptionedFeatureDataset: one-view latents, uniform caption draws re-drawn per access, empty-context drops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uvit_pipeline.data import CaptionedFeatureDataset, FeatureStore, TextFeatures

from ..text_fixtures import EMPTY_VALUE, write_latent_store, write_text_store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    return write_latent_store(root / "images"), TextFeatures(write_text_store(root / "text"))


def _dataset(stores, **kw):
    images, text = stores
    kw.setdefault("random_flip", False)
    return CaptionedFeatureDataset(images, text.split("train"), text.empty_context, **kw)


def test_items_are_moments_and_a_caption_of_that_image(stores):
    ds = _dataset(stores)
    moments = FeatureStore(stores[0]).read_all("moments")
    offsets = stores[1].split("train").offsets
    assert len(ds) == 6
    for idx in range(6):
        x, ctx = ds[idx]
        assert x.dtype == torch.float32 and x.shape == (8, 4, 4)
        torch.testing.assert_close(x, torch.from_numpy(moments[idx, 0].astype(np.float32)))
        assert ctx.dtype == torch.float32 and ctx.shape == (77, 32)
        assert offsets[idx] <= int(ctx[0, 0]) < offsets[idx + 1]


def test_caption_draw_is_uniform_and_redrawn_every_access(stores):
    ds = _dataset(stores, seed=3)
    lo = int(stores[1].split("train").offsets[3])  # image 3 has 5 captions
    draws = np.array([int(ds[3][1][0, 0]) - lo for _ in range(5000)])
    counts = np.bincount(draws, minlength=5)
    assert len(counts) == 5
    # 5000 draws of 1/5: std ≈ 28, so ±150 is > 5 sigma
    assert np.all(np.abs(counts - 1000) < 150), counts
    assert len(set(draws[:20].tolist())) > 1  # re-drawn at every access, not fixed per image
    # the same seed gives the same stream
    again = _dataset(stores, seed=3)
    assert [int(again[3][1][0, 0]) - lo for _ in range(20)] == draws[:20].tolist()


def test_empty_context_dropping_rate(stores):
    ds = _dataset(stores, p_uncond=0.1, seed=1)
    dropped = 0
    for i in range(6000):
        _, ctx = ds[i % 6]
        if torch.all(ctx == EMPTY_VALUE):
            dropped += 1
        else:
            assert ctx[0, 0] >= 0
    # Binomial(6000, 0.1): mean 600, std ≈ 23
    assert 500 < dropped < 700, dropped
    never = _dataset(stores, p_uncond=0.0)
    assert not any(torch.all(never[i % 6][1] == EMPTY_VALUE) for i in range(300))
    always = _dataset(stores, p_uncond=1.0)
    assert all(torch.all(always[i][1] == EMPTY_VALUE) for i in range(6))


def test_one_view_store_refuses_random_flip_and_mismatched_text(stores, tmp_path):
    with pytest.raises(ValueError, match="random_flip must be false"):
        _dataset(stores, random_flip=True)
    images, _ = stores
    other = TextFeatures(write_text_store(tmp_path / "text", train_counts=(1, 2)))
    with pytest.raises(ValueError, match="captions for 2 images"):
        CaptionedFeatureDataset(images, other.split("train"), other.empty_context, False)
    none = TextFeatures(write_text_store(tmp_path / "t0", train_counts=(1, 0, 1, 1, 1, 1)))
    with pytest.raises(ValueError, match="1 images have no caption"):
        CaptionedFeatureDataset(images, none.split("train"), none.empty_context, False)


def test_text_store_reader_checks_offsets(tmp_path):
    text = TextFeatures(write_text_store(tmp_path / "text"))
    assert text.identity["hidden_size"] == 32 and text.identity["max_length"] == 77
    np.save(tmp_path / "text" / "val" / "offsets.npy", np.array([0, 3, 2, 23]))
    with pytest.raises(ValueError, match="non-decreasing"):
        text.split("val")
    np.save(tmp_path / "text" / "val" / "offsets.npy", np.array([0, 5, 10, 17, 23]))
    with pytest.raises(ValueError, match="labels disagree"):
        TextFeatures(tmp_path / "text").split("val")
