"""Text-to-image through the pipelines: the demo's COCO layout -> ingestion of both splits -> no-flip
latents -> caption features -> a few steps of text-conditioned training -> evaluation with captions
-> generate from prompts. Tiny random CLIP text encoder and VAE (conftest fixtures)."""

from __future__ import annotations

import numpy as np
import pytest

from uvit_pipeline.data.text_features import TextFeatures
from uvit_pipeline.pipelines.demo_data import create_pipeline as demo_data
from uvit_pipeline.pipelines.evaluation import create_pipeline as evaluation
from uvit_pipeline.pipelines.features import create_pipeline as features
from uvit_pipeline.pipelines.fid_reference import create_pipeline as fid_reference
from uvit_pipeline.pipelines.generate import create_pipeline as generate
from uvit_pipeline.pipelines.ingestion import create_pipeline as ingestion
from uvit_pipeline.pipelines.text_features import create_pipeline as text_features
from uvit_pipeline.pipelines.train_uvit import create_pipeline as training

from ..conftest import load_params, run

PROMPTS = ["a red circle", "a blue cross"]


@pytest.fixture(scope="module")
def t2i_params(demo_params):
    p = load_params("demo_t2i")
    p["paths"] = demo_params["paths"]
    p["demo_data"] = {**p["demo_data"], "n_per_class": 3}
    p["ingestion"]["workers"] = 1
    p["features"].update(
        resolution=32, shard_size=16, batch_size=8, scale_factor=0.5
    )  # tiny f=8 VAE
    p["text"].update(batch_size=16, shard_size=16, prompts=PROMPTS)
    p["model"].update(embed_dim=32, depth=2, clip_dim=32)  # the tiny CLIP's hidden size
    p["training"].update(batch_size=8, n_steps=4, warmup_steps=1, log_interval=2, save_interval=4)
    p["fid_reference"]["classifier"].update(steps=5, batch_size=16)
    p["evaluation"].update(steps=3, n_samples=6, batch_size=3, grid_columns=2)
    p["generate"].update(steps=3, n_per_condition=2, prompts=PROMPTS)
    return p


@pytest.fixture(scope="module")
def t2i_chain(t2i_params, vae_dir, clip_dir):
    pipe = demo_data() + ingestion() + features() + text_features() + fid_reference() + training()
    catalog = {
        "autoencoder": str(vae_dir),
        "text_encoder": str(clip_dir),
        "inception_weights": "pytorch-fid",
        "official_fid_stats": None,
    }
    return {**catalog, **run(pipe, catalog, t2i_params)}


@pytest.mark.slow
def test_coco_layout_to_caption_features_and_a_text_model(t2i_chain):
    manifest = t2i_chain["image_manifest"]
    assert set(manifest["split"]) == {"train2014", "val2014"}
    text = TextFeatures(t2i_chain["text_features"])
    assert text.splits == ["train", "val"] and text.context_shape == (16, 32)
    store, offsets = text.split("train")
    assert len(offsets) - 1 == int((manifest["split"] == "train2014").sum())
    assert text.prompts == PROMPTS and text.empty_context.shape == (16, 32)
    # every caption of every image, its class carried along for the demo's accuracy
    val = text.split("val").store.manifest
    assert set(val["image_label"]) == set(manifest.loc[manifest["split"] == "val2014", "label"])
    summary = t2i_chain["training_summary"]
    assert summary["steps"] == 4 and np.isfinite(summary["final_loss"])


@pytest.mark.slow
def test_evaluation_conditions_on_val_captions(t2i_chain, t2i_params):
    catalog = {
        k: t2i_chain[k]
        for k in (
            "uvit_checkpoint",
            "image_features",
            "text_features",
            "autoencoder",
            "reference_stats",
            "feature_network",
        )
    }
    catalog.update(decoder=None, clip_model=None, run_overrides={})
    out = run(evaluation(), catalog, t2i_params)
    assert set(out["evaluation_metrics"]) == {"demo_fd", "demo_class_accuracy"}
    assert out["sample_grid"].size[1] > 2 * 32  # two prompt rows, upscaled, with text under each


@pytest.mark.slow
def test_generate_from_prompts(t2i_chain, t2i_params, tmp_path):
    catalog = {
        k: t2i_chain[k]
        for k in ("uvit_checkpoint", "image_features", "autoencoder", "text_encoder")
    }
    catalog.update(decoder=None, prompt_file=None)
    out = run(generate(), catalog, t2i_params)
    from pathlib import Path

    names = sorted(p.name for p in Path(out["generated_images"]).iterdir())
    assert names[0].startswith("000-a-red-circle-") and names[-1].startswith("001-a-blue-cross-")
    assert len(names) == 4


def test_val_captions_only_without_an_image_store(t2i_params, clip_dir, demo_params):
    """Evaluating an imported checkpoint needs the val captions, not the training images' latents."""
    pipe = demo_data() + ingestion()
    params = {
        **t2i_params,
        "paths": {**demo_params["paths"], "staging": demo_params["paths"]["staging"] + "-valonly"},
    }
    manifest = run(pipe, {}, params)["image_manifest"]
    out = run(
        text_features(),
        {"image_manifest": manifest, "image_features": None, "text_encoder": str(clip_dir)},
        params,
    )
    assert TextFeatures(out["text_features"]).splits == ["val"]
