"""Text-conditioned sampling: caption draws, contexts in chunks, world-size independence, one setup."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from uvit_pipeline.data import TextFeatures
from uvit_pipeline.models import UViT
from uvit_pipeline.sampling import (
    SamplingSpec,
    build_sampler,
    collect,
    collect_caption_rows,
    conditions_from_text_store,
    draw_caption_rows,
    generate_samples,
    store_prompt_conditions,
)
from uvit_pipeline.training.checkpoint import export_final

from ..text_fixtures import ENCODER, PROMPTS, write_text_store
from .test_generate import generate

KWARGS = dict(
    img_size=8,
    patch_size=2,
    in_chans=3,
    embed_dim=32,
    depth=2,
    num_heads=2,
    clip_dim=32,
    num_clip_token=77,
)


@pytest.fixture(scope="module")
def text_store(tmp_path_factory):
    return write_text_store(tmp_path_factory.mktemp("text") / "store")


def _export(path, config_extra=None, kwargs=None):
    torch.manual_seed(0)
    kwargs = kwargs or KWARGS
    model = UViT(**kwargs)
    config = {
        "model_kwargs": kwargs,
        "schedule": "discrete",
        "p_uncond": 0.1,
        "data": {"kind": "pixels"},
        "text_encoder": {**ENCODER, "max_length": 77},
        **(config_extra or {}),
    }
    return export_final(path, model, model, config, {"steps": 0})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("ckpt") / "t2i")


def spec_for(checkpoint, text_store, out_dir) -> dict:
    return {
        "checkpoint": str(checkpoint),
        "which": "ema",
        "n_samples": 10,
        "batch_size": 4,
        "sampler": "dpm_solver_pp",
        "steps": 3,
        "cfg_scale": 1.0,  # COCO's scale (§3.3)
        "clip_x0": False,
        "seed": 7,
        "num_real_classes": None,
        "null_label": None,
        "device": "cpu",
        "autoencoder": None,
        "scale_factor": None,
        "decode_batch_size": 50,
        "text_features": str(text_store),
        "text_split": "val",
        "out_dir": str(out_dir),
    }


def test_caption_draws_cover_images_once_per_epoch_and_ignore_chunking():
    offsets = np.array([0, 5, 5, 11, 12, 19])  # image 1 has no caption
    images, captions = draw_caption_rows(offsets, 8, seed=3)
    assert sorted(images[:4].tolist()) == [0, 2, 3, 4]  # an epoch uses every captioned image once
    assert sorted(images[4:].tolist()) == [0, 2, 3, 4]
    assert np.all((offsets[images] <= captions) & (captions < offsets[images + 1]))
    parts = [draw_caption_rows(offsets, n, seed=3, start=s) for s, n in ((0, 3), (3, 2), (5, 3))]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), images)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), captions)
    assert not np.array_equal(draw_caption_rows(offsets, 8, seed=4)[1], captions)
    # captions of an image are drawn uniformly: image 2 has 6
    _, many = draw_caption_rows(offsets, 4 * 3000, seed=0)
    counts = np.bincount(many[(many >= 5) & (many < 11)] - 5, minlength=6)
    assert np.all(np.abs(counts - 500) < 110), counts


def test_text_chunks_record_captions_and_do_not_depend_on_rank_split(
    checkpoint, text_store, tmp_path
):
    one = spec_for(checkpoint, text_store, tmp_path / "one")
    generate(one, progress=False)
    images, labels = collect(one["out_dir"], 10, 4)
    assert images.shape == (10, 3, 8, 8) and images.dtype == np.uint8 and labels is None
    captions, image_rows = collect_caption_rows(one["out_dir"], 10, 4)
    offsets = TextFeatures(text_store).split("val").offsets
    assert np.all((offsets[image_rows] <= captions) & (captions < offsets[image_rows + 1]))
    assert sorted(image_rows[:4].tolist()) == [0, 1, 2, 3]  # 4 val images: no repeat in an epoch

    two = spec_for(checkpoint, text_store, tmp_path / "two")
    generate(two, rank=1, world_size=2, progress=False)
    assert sorted(os.listdir(two["out_dir"])) == ["chunk-000001.npz"]
    generate(two, rank=0, world_size=2, progress=False)
    np.testing.assert_array_equal(collect(two["out_dir"], 10, 4)[0], images)
    np.testing.assert_array_equal(collect_caption_rows(two["out_dir"], 10, 4)[0], captions)

    # Chunk 1 is exactly guided sampling with those captions' contexts and the empty context.
    setup = build_sampler(SamplingSpec(checkpoint=str(checkpoint)))
    tc = conditions_from_text_store(text_store, 4, seed=7, start=4)
    np.testing.assert_array_equal(tc.caption_rows, captions[4:8])
    again = setup.generate(
        n=4,
        sampler="dpm_solver_pp",
        steps=3,
        cfg_scale=1.0,
        contexts=tc.contexts,
        null_context=tc.null_context,
        seed=7 * 1_000_003 + 2,
        progress=False,
    )
    np.testing.assert_array_equal(again, images[4:8])


def test_contexts_and_guidance_change_the_samples(checkpoint, text_store):
    setup = build_sampler(SamplingSpec(checkpoint=str(checkpoint)))
    conds = store_prompt_conditions(text_store)
    assert conds.prompts == PROMPTS and conds.contexts.shape == (2, 77, 32)
    kw = dict(n=2, sampler="dpm_solver_pp", steps=3, seed=0, progress=False)
    guided = setup.generate(
        contexts=conds.contexts, null_context=conds.null_context, cfg_scale=1.0, **kw
    )
    plain = setup.generate(contexts=conds.contexts, cfg_scale=0.0, **kw)
    swapped = setup.generate(contexts=conds.contexts[::-1].copy(), cfg_scale=0.0, **kw)
    assert not np.array_equal(guided, plain)
    assert not np.array_equal(plain, swapped)
    with pytest.raises(ValueError, match="null_context"):
        setup.generate(contexts=conds.contexts, cfg_scale=1.0, **kw)
    with pytest.raises(ValueError, match="not both"):
        generate_samples(
            setup.nnet,
            setup.schedule,
            sample_shape=(3, 8, 8),
            batch_size=2,
            contexts=conds.contexts,
            labels=torch.zeros(2, dtype=torch.long),
            **kw,
        )


def test_text_spec_is_checked_against_the_checkpoint(checkpoint, text_store, tmp_path):
    spec = spec_for(checkpoint, text_store, tmp_path / "a")
    with pytest.raises(ValueError, match="needs 'text_features'"):
        generate({**spec, "text_features": None}, progress=False)
    other = _export(tmp_path / "other", {"text_encoder": {**ENCODER, "sha256": "1" * 64}})
    with pytest.raises(ValueError, match="sha256: checkpoint='1+"):
        generate(spec_for(other, text_store, tmp_path / "b"), progress=False)
    small = _export(tmp_path / "small", kwargs={**KWARGS, "num_clip_token": 8})
    with pytest.raises(ValueError, match=r"contexts \(77, 32\)"):
        generate(spec_for(small, text_store, tmp_path / "c"), progress=False)


def test_build_sampler_decodes_latents_with_the_trained_scale(tmp_path, vae_dir):
    kwargs = {**KWARGS, "img_size": 4, "in_chans": 4}
    data = {"kind": "latent_moments", "scale_factor": 0.2301}
    ckpt = _export(tmp_path / "latent", {"data": data}, kwargs=kwargs)
    with pytest.raises(ValueError, match="autoencoder"):
        build_sampler(SamplingSpec(checkpoint=str(ckpt)))
    with pytest.raises(ValueError, match=r"0.18215 differs .* 0.2301"):
        build_sampler(
            SamplingSpec(checkpoint=str(ckpt), autoencoder=str(vae_dir), scale_factor=0.18215)
        )
    setup = build_sampler(SamplingSpec(checkpoint=str(ckpt), autoencoder=str(vae_dir)))
    assert setup.sample_shape == (4, 4, 4) and setup.is_text
    z = torch.randn(1, 4, 4, 4)
    assert setup.decode(z).shape == (1, 3, 32, 32)


def test_user_prompts_encoded_on_the_fly(clip_dir):
    from uvit_pipeline.encoders.text import encode_prompts, load_text_encoder
    from uvit_pipeline.sampling import encode_prompt_conditions

    encoder = load_text_encoder(clip_dir)
    conds = encode_prompt_conditions(encoder, ["the cat", "a cat."])
    assert conds.contexts.shape == (2, 77, 32) and conds.prompts == ["the cat", "a cat."]
    np.testing.assert_array_equal(conds.null_context, encode_prompts(encoder, [""])[0].numpy())
    assert not np.allclose(conds.contexts[0], conds.contexts[1])
