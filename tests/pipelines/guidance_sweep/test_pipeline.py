"""`guidance_sweep`: the metric at each CFG scale of `evaluation.cfg_sweep`, as flat MLflow keys and a
curve; a scale's number is the one `evaluation` reports at that scale."""

from __future__ import annotations

import pytest
from PIL import Image

from uvit_pipeline.pipelines.evaluation import create_pipeline as evaluation
from uvit_pipeline.pipelines.guidance_sweep import create_pipeline

from ..conftest import run, with_section, write_checkpoint


def sweep_inputs(chain: dict) -> dict:
    keys = ("uvit_checkpoint", "reference_stats", "feature_network")
    return {
        **{k: chain[k] for k in keys},
        "autoencoder": None,
        "decoder": None,
        "text_features": None,
    }


def test_one_result_per_scale_with_flat_keys_and_a_curve(demo_chain, demo_params):
    params = with_section(demo_params, "evaluation", cfg_sweep=[0.0, 3.0])
    out = run(create_pipeline(), sweep_inputs(demo_chain), params)
    table, curve = out["guidance_sweep"], out["guidance_curve"]
    assert [r["cfg_scale"] for r in table["results"]] == [0.0, 3.0]
    metrics = ("demo_fd", "demo_class_accuracy")
    flat = {f"sweep.{m}.cfg_{s}" for m in metrics for s in ("0", "3")}
    assert set(table) == {"results"} | flat
    for r in table["results"]:
        assert set(r) == {"cfg_scale", *metrics}
        for m in metrics:
            assert table[f"sweep.{m}.cfg_{r['cfg_scale']:g}"] == r[m]
    assert table["sweep.demo_fd.cfg_0"] != table["sweep.demo_fd.cfg_3"]  # guidance changes samples
    assert isinstance(curve, Image.Image) and curve.size[0] > 600  # one panel per metric

    # the same settings through `evaluation` give the same number at that scale
    node = evaluation().only_nodes("sample_for_evaluation", "score_samples")
    inputs = {
        **sweep_inputs(demo_chain),
        "image_features": None,
        "text_features": None,
        "clip_model": None,
    }
    metrics_at_3 = run(node, inputs, with_section(params, "evaluation", cfg_scale=3.0))
    assert metrics_at_3["evaluation_metrics"]["demo_fd"] == table["sweep.demo_fd.cfg_3"]


def test_empty_sweep_is_refused(demo_chain, demo_params):
    params = with_section(demo_params, "evaluation", cfg_sweep=[])
    with pytest.raises(ValueError, match="evaluation.cfg_sweep is empty"):
        run(create_pipeline(), sweep_inputs(demo_chain), params)


def test_guided_scales_need_a_null_class(demo_chain, demo_params, tmp_path):
    kwargs = {
        "img_size": 32,
        "patch_size": 4,
        "in_chans": 3,
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "num_classes": 10,
    }
    ckpt = write_checkpoint(tmp_path / "no-null-class", kwargs, p_uncond=0.0)
    params = with_section(demo_params, "evaluation", cfg_sweep=[0.0, 1.0])
    params = with_section(params, "paths", staging=str(tmp_path / "staging"))
    inputs = {**sweep_inputs(demo_chain), "uvit_checkpoint": ckpt}
    with pytest.raises(ValueError, match=r"evaluation.cfg_sweep: a CFG scale > 0 \(1.0\)"):
        run(create_pipeline(), inputs, params)
