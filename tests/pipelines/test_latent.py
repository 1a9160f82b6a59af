"""The latent-diffusion path end to end on CPU (uvit-reference §4.2–4.5, §5.2, §5.3, §7.1).

A tiny random f=8 AutoencoderKL is saved with `save_pretrained` and loaded back from its directory by the
nodes, exactly as `features.autoencoder: <dir>` would be in a run. Nodes are called as plain functions
inside a temporary working directory (they write under relative `data/...` paths).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from uvit_pipeline.data.demo import generate_demo_data
from uvit_pipeline.data.feature_store import FeatureStore, FeatureStoreMismatch
from uvit_pipeline.data.images import center_crop_adm, load_rgb, to_uint8_chw
from uvit_pipeline.data.ingest import scan_imagenet_folder
from uvit_pipeline.encoders import autoencoder as ae
from uvit_pipeline.pipelines.evaluation.nodes import evaluate
from uvit_pipeline.pipelines.features.nodes import build_image_features
from uvit_pipeline.pipelines.training.nodes import make_train_config
from uvit_pipeline.training import load_checkpoint_dir, train

N_IMAGES = 12  # rows of the tiny store (3 shards of 4)
DATA = {"source": "imagenet_folder", "split": "train", "workers": 1, "name": "demo-latent"}
TINY_UVIT = {
    "img_size": 4,
    "patch_size": 2,
    "in_chans": 4,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 11,
}  # 10 demo classes + null class 10 (§4.3)


def features_params(vae_dir, **overrides) -> dict:
    p = {
        "kind": "latent_moments",
        "resolution": 32,
        "crop": "adm",
        "shard_size": 4,
        "batch_size": 4,
        "autoencoder": str(vae_dir),
        "scale_factor": 0.18215,
        "device": "cpu",
    }
    p.update(overrides)
    return p


def make_project(root: Path) -> None:
    for layer in ("04_feature", "06_models", "07_model_output"):
        (root / "data" / layer).mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Demo ImageNet-layout folder and the first N_IMAGES rows of its manifest (all 10 classes hit)."""
    root = tmp_path_factory.mktemp("raw")
    generate_demo_data(root, n_per_class=4, image_size=32)
    manifest, report = scan_imagenet_folder(
        root / "imagenet", split="train", workers=1, progress=False
    )
    assert report.empty
    # every 3rd row: 12 images spread over the classes
    return root / "imagenet", manifest.iloc[:: len(manifest) // N_IMAGES][:N_IMAGES].reset_index(
        drop=True
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory, vae_dir, raw):
    """A working directory holding a complete latent store built by the features node."""
    root = tmp_path_factory.mktemp("project")
    make_project(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        store = build_image_features(str(raw[0]), raw[1], features_params(vae_dir), DATA)
    return {"root": root, "store": root / store}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, project, vae_dir):
    """Final checkpoints of a few steps with each schedule on the latent store."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project["root"])
        for schedule in ("vp_continuous", "discrete"):
            cfg = make_train_config(
                TINY_UVIT,
                train_params(schedule),
                {"cpu": True},
                features_params(vae_dir),
                str(project["store"]),
                run_root=f"data/06_models/{schedule}",
            )
            out[schedule] = project["root"] / train(cfg)  # train returns a run_root-relative path
    return out


def train_params(schedule: str) -> dict:
    return {
        "schedule": schedule,
        "batch_size": 4,
        "lr": 1e-3,
        "warmup_steps": 1,
        "n_steps": 3,
        "ema_rate": 0.5,
        "p_uncond": 0.25,
        "log_interval": 1,
        "save_interval": 3,
        "seed": 0,
        "data": {"random_flip": True, "num_workers": 0},
    }


def cropped(raw_root: Path, manifest) -> np.ndarray:
    """uint8 (N, 3, 32, 32) ADM-cropped images (§7.1), independently of the extraction code."""
    return np.stack(
        [to_uint8_chw(center_crop_adm(load_rgb(raw_root / p), 32)) for p in manifest["path"]]
    )


# ------------------------------------------------------------------------------------------------
# Feature extraction


def test_store_holds_fp16_moments_of_originals_and_flips(project, raw, vae_dir):
    store = FeatureStore(project["store"])
    moments = store.read_all("moments")
    assert len(store) == N_IMAGES
    assert moments.shape == (N_IMAGES, 2, 8, 4, 4) and moments.dtype == np.float16
    assert np.array_equal(store.read_all("label"), raw[1]["label"].to_numpy())
    assert list(store.manifest["path"]) == list(raw[1]["path"])

    vae = ae.load_autoencoder(vae_dir)
    images = torch.from_numpy(cropped(*raw)).float() / 127.5 - 1.0
    expect_orig = ae.encode_moments(vae, images).numpy()
    expect_flip = ae.encode_moments(
        vae, images.flip(-1)
    ).numpy()  # h-flip of the cropped image (§7.1)
    np.testing.assert_allclose(moments[:, 0].astype(np.float32), expect_orig, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(moments[:, 1].astype(np.float32), expect_flip, rtol=2e-3, atol=2e-3)
    assert not np.allclose(moments[:, 0], moments[:, 1])  # the two views really differ


def test_store_meta_records_encoder_and_preprocessing(project, vae_dir):
    meta = FeatureStore(project["store"]).meta
    vae = ae.load_autoencoder(vae_dir)
    assert meta["kind"] == "latent_moments" and meta["flip"] == "stored"
    assert meta["resolution"] == 32 and meta["crop"] == "adm" and meta["scale_factor"] == 0.18215
    assert meta["encoder"] == str(vae_dir)
    assert meta["encoder_sha256"] == ae.state_dict_sha256(vae)
    assert meta["fields"]["moments"] == {"shape": [2, 8, 4, 4], "dtype": "float16"}


def test_interrupted_extraction_resumes_without_duplicates(
    tmp_path, monkeypatch, project, raw, vae_dir
):
    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    real = ae.encode_moments
    calls = {"n": 0}

    def flaky(vae, x):
        calls["n"] += 1
        if calls["n"] == 3:  # two shards committed, the third batch dies
            raise RuntimeError("simulated crash during encoding")
        return real(vae, x)

    monkeypatch.setattr(ae, "encode_moments", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_image_features(str(raw[0]), raw[1], features_params(vae_dir), DATA)
    # the staging folder (its lock file `.<name>.lock` lies next to it)
    staging = next(p for p in Path("data/04_feature/.staging").iterdir() if p.is_dir())
    # two shards committed (a manifest part is a shard's commit mark), the store is not complete
    assert sorted(f.name for f in (staging / "manifest-parts").glob("*.parquet")) == [
        "00000.parquet",
        "00001.parquet",
    ]
    assert not json.loads((staging / "meta.json").read_text())["complete"]

    out = Path(build_image_features(str(raw[0]), raw[1], features_params(vae_dir), DATA))
    assert out.resolve() == staging.resolve()  # same settings -> same folder -> resumed there
    assert calls["n"] == 4  # only the missing third batch was encoded again
    resumed, full = FeatureStore(out), FeatureStore(project["store"])
    assert len(resumed) == len(full) == N_IMAGES
    assert list(resumed.manifest["path"]) == list(full.manifest["path"])
    assert list(resumed.manifest["row"]) == list(range(N_IMAGES))
    assert np.array_equal(resumed.read_all("moments"), full.read_all("moments"))
    assert np.array_equal(resumed.read_all("label"), full.read_all("label"))


def test_posterior_sampling_and_scale_factor(project):
    """z = (mean + exp(½ logvar)·ε)·scale (§4.5): per-element mean and std over many draws."""
    moments = torch.from_numpy(
        FeatureStore(project["store"]).get("moments", 0)[0].astype(np.float32)
    )
    mean, logvar = moments.chunk(2)
    scale = 0.18215
    gen = torch.Generator().manual_seed(0)
    z = ae.sample_latents(moments[None].expand(4000, -1, -1, -1), scale, gen)  # (4000, 4, 4, 4)
    assert z.shape == (4000, 4, 4, 4) and z.dtype == torch.float32
    std = torch.exp(0.5 * logvar) * scale
    torch.testing.assert_close(
        z.mean(0), mean * scale, atol=float(4 * std.max() / 4000**0.5), rtol=0
    )
    torch.testing.assert_close(z.std(0), std, rtol=0.1, atol=0)
    # per-channel spread follows the logvar biases set in the fixture (channel 3 widest)
    assert std[3].mean() > std[0].mean()


# ------------------------------------------------------------------------------------------------
# Training


def test_training_refuses_a_store_built_with_other_settings(
    tmp_path, monkeypatch, project, vae_dir
):
    monkeypatch.chdir(tmp_path)
    cases = (
        ("scale_factor", 0.23010),
        ("resolution", 64),
        ("crop", "none"),
        ("autoencoder", "stabilityai/sd-vae-ft-ema"),
    )
    for field, value in cases:
        cfg = make_train_config(
            TINY_UVIT,
            train_params("discrete"),
            {"cpu": True},
            features_params(vae_dir, **{field: value}),
            str(project["store"]),
            run_root="runs",
        )
        meta_key = (
            "encoder" if field == "autoencoder" else field
        )  # the store records the encoder's name
        with pytest.raises(FeatureStoreMismatch, match=meta_key) as err:
            train(cfg)
        assert set(err.value.mismatches) == {meta_key}


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["vp_continuous", "discrete"])
def test_both_schedules_train_on_the_latent_store(trained, schedule):
    final = Path(trained[schedule])
    config, ema, raw_state = load_checkpoint_dir(final)
    summary = json.loads((final / "summary.json").read_text())
    assert config["schedule"] == schedule
    assert config["data"]["kind"] == "latent_moments" and config["data"]["scale_factor"] == 0.18215
    assert summary["steps"] == 3 and np.isfinite(summary["final_loss"])
    assert ema.keys() == raw_state.keys() and ema["patch_embed.proj.weight"].shape[1] == 4
    losses = [
        json.loads(line)["loss"]
        for line in (final.parent / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 3 and all(np.isfinite(losses))


# ------------------------------------------------------------------------------------------------
# Guided sampling through the decoder


@pytest.fixture(scope="module")
def demo_network(tmp_path_factory, raw):
    """A small demo-classifier feature network and the reference statistics of the real images."""
    from uvit_pipeline.metrics.demo_classifier import (
        classifier_features,
        save_classifier,
        train_demo_classifier,
    )
    from uvit_pipeline.metrics.fid import statistics
    from uvit_pipeline.metrics.network import write_network_dir

    images, labels = cropped(*raw), raw[1]["label"].to_numpy()
    model, _ = train_demo_classifier(
        images, labels, num_classes=10, steps=5, batch_size=12, width=8, feature_dim=8, seed=0
    )
    out = tmp_path_factory.mktemp("network")
    save_classifier(out / "classifier.safetensors", model)
    write_network_dir(out, {"network": "demo_classifier", "num_classes": 10})
    mu, sigma = statistics(classifier_features(model, images))
    return str(out), {"mu": mu, "sigma": sigma, "network": "demo_classifier"}


@pytest.mark.slow
def test_guided_dpm_solver_pp_samples_decode_to_images(project, trained, demo_network, vae_dir):
    network, reference = demo_network
    evaluation = {
        "use_ema": True,
        "sampler": "dpm_solver_pp",
        "steps": 6,
        "clip_x0": False,
        "cfg_scale": 0.4,
        "n_samples": 6,
        "batch_size": 4,
        "grid_columns": 1,
        "seed": 0,
        "device": "cpu",
        "num_processes": 1,
        "save_samples": True,
        "autoencoder": None,
        "decode_batch_size": 4,
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project["root"])
        metrics, report, grid, samples_dir = evaluate(
            str(trained["discrete"]), reference, network, evaluation, features_params(vae_dir)
        )
        samples_dir = project["root"] / samples_dir
    assert np.isfinite(metrics["demo_fd"]["value"]) and "fid" not in metrics
    assert report["cfg_scale"] == 0.4 and report["sampler"] == "dpm_solver_pp"
    # ADM evaluator format (§5.3): uint8 NHWC images + labels in 0..9 (the null class is never drawn)
    with np.load(samples_dir / "samples.npz") as npz:
        images, labels = npz["arr_0"], npz["arr_1"]
    assert images.dtype == np.uint8 and images.shape == (6, 32, 32, 3)
    assert labels.shape == (6,) and labels.min() >= 0 and labels.max() < 10
    assert images.std() > 0  # decoded pixels, not a constant or the 4x4 latent
    # the grid holds one decoded 32x32 image per class row (10 rows x 1 column, 2 px gutters)
    assert grid.size == (32 + 4, 10 * 34 + 2)
