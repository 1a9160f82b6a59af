"""`fid_reference`: the metric's feature network (the demo classifier, or a record of the FID
Inception weights) and the real images' statistics, or the official statistics file as is (§6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import uvit_pipeline.metrics.fid as fid
from uvit_pipeline.data.images import center_crop_adm, load_rgb, to_uint8_chw
from uvit_pipeline.metrics.fid import statistics
from uvit_pipeline.metrics.network import load_feature_network
from uvit_pipeline.pipelines import _references
from uvit_pipeline.pipelines.fid_reference import create_pipeline

from ..conftest import run, with_section


def real_features(demo_chain, n: int) -> np.ndarray:
    """The first n real images, ADM-cropped independently of the pipeline, in the network's space."""
    raw, manifest = Path(demo_chain["raw_images"]), demo_chain["image_manifest"]
    images = np.stack(
        [to_uint8_chw(center_crop_adm(load_rgb(raw / p), 32)) for p in manifest["path"][:n]]
    )
    _, features, _ = load_feature_network(demo_chain["feature_network"])
    return features(images)


def test_demo_classifier_and_reference_statistics(demo_chain):
    network = Path(demo_chain["feature_network"])
    info = json.loads((network / "network.json").read_text())
    assert info["network"] == "demo_classifier" and info["num_classes"] == 10
    assert 0 <= info["train_accuracy"] <= 1
    assert (network / "classifier.safetensors").is_file()

    stats = demo_chain["reference_stats"]
    assert stats["network"] == "demo_classifier"
    d = stats["mu"].shape[0]
    assert stats["mu"].shape == (d,) and stats["sigma"].shape == (d, d)
    np.testing.assert_allclose(stats["sigma"], stats["sigma"].T)
    mu, sigma = statistics(real_features(demo_chain, len(demo_chain["image_manifest"])))
    np.testing.assert_allclose(stats["mu"], mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["sigma"], sigma, rtol=1e-5, atol=1e-6)


def test_max_reference_images_limits_the_statistics(demo_chain, demo_params):
    params = with_section(demo_params, "fid_reference", max_reference_images=8)
    inputs = {k: demo_chain[k] for k in ("raw_images", "image_manifest", "feature_network")}
    out = run(
        create_pipeline().only_nodes("compute_reference_stats"),
        {**inputs, "official_fid_stats": None},
        params,
    )
    mu, sigma = statistics(real_features(demo_chain, 8))
    np.testing.assert_allclose(out["reference_stats"]["mu"], mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["reference_stats"]["sigma"], sigma, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_processes_give_the_statistics_of_one(demo_chain, demo_params, tmp_path, monkeypatch):
    """`launcher.num_processes: 2` (CPU): the statistics the demo chain's one process computed
    (blocks of 16 images: 3 blocks of the 40; batches of 16 as in one block of 1000)."""
    monkeypatch.setattr(_references, "REFERENCE_BLOCK_IMAGES", 16)
    params = with_section(demo_params, "launcher", num_processes=2)
    params = with_section(params, "paths", staging=str(tmp_path / "staging"))
    inputs = {k: demo_chain[k] for k in ("raw_images", "image_manifest", "feature_network")}
    node = create_pipeline().only_nodes("compute_reference_stats")
    stats = run(node, {**inputs, "official_fid_stats": None}, params)["reference_stats"]
    one = demo_chain["reference_stats"]
    assert stats["mu"].tobytes() == one["mu"].tobytes()
    assert stats["sigma"].tobytes() == one["sigma"].tobytes()
    assert not any((tmp_path / "staging").glob("reference-blocks-*/"))  # merged, then removed


@pytest.mark.parametrize(
    ("weights", "recorded"),
    [("pytorch-fid", None), ("/weights/pt_inception.pth", "/weights/pt_inception.pth")],
)
def test_official_statistics_are_used_as_they_are(
    demo_chain, demo_params, tmp_path, inception_calls, weights, recorded
):
    params = with_section(demo_params, "fid_reference", network="inception_v3_fid")
    params = with_section(params, "paths", staging=str(tmp_path))
    official = {"mu": np.arange(4.0), "sigma": np.eye(4), "network": "inception_v3_fid"}
    inputs = {k: demo_chain[k] for k in ("raw_images", "image_manifest")}
    out = run(
        create_pipeline(),
        {**inputs, "inception_weights": weights, "official_fid_stats": official},
        params,
    )
    stats = out["reference_stats"]  # imported as is: paper numbers use this file
    assert stats["network"] == "inception_v3_fid"
    assert np.array_equal(stats["mu"], official["mu"])
    assert np.array_equal(stats["sigma"], official["sigma"])
    assert inception_calls == [recorded]  # the weights are checked before anything is written
    info = json.loads((Path(out["feature_network"]) / "network.json").read_text())
    assert info == {"network": "inception_v3_fid", "weights": recorded}


def test_unavailable_inception_weights_fail_before_writing(
    demo_chain, demo_params, tmp_path, monkeypatch
):
    def offline(weights=None, **kw):
        raise RuntimeError("pytorch-fid weights are not cached and the network is unreachable")

    monkeypatch.setattr(fid, "load_inception", offline)
    params = with_section(demo_params, "fid_reference", network="inception_v3_fid")
    params = with_section(params, "paths", staging=str(tmp_path / "staging"))
    inputs = {k: demo_chain[k] for k in ("raw_images", "image_manifest")}
    with pytest.raises(RuntimeError, match="not cached"):
        run(
            create_pipeline(),
            {**inputs, "inception_weights": "pytorch-fid", "official_fid_stats": None},
            params,
        )
    assert not (tmp_path / "staging").exists()
