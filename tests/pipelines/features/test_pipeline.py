"""`features`: manifest -> feature store. Pixels (the demo chain's store) and VAE posterior moments
built with the tiny KL-f8 autoencoder, loaded from its `save_pretrained` directory as a run would
(docs/reference.md §4.5, §7.1): values, meta, resumption in the same staging folder, and training's
refusal of a store built with other settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from uvit_pipeline.data.feature_store import FeatureStore, FeatureStoreMismatch
from uvit_pipeline.data.images import center_crop_adm, load_rgb, to_uint8_chw
from uvit_pipeline.encoders import autoencoder as ae
from uvit_pipeline.pipelines.features import create_pipeline
from uvit_pipeline.pipelines.train_uvit.nodes import make_train_config
from uvit_pipeline.training import train

from ..conftest import N_LATENT, run, with_section

TINY_UVIT = {
    "img_size": 4,
    "patch_size": 2,
    "in_chans": 4,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 11,
}  # 10 demo classes + the null class (§4.3)
TRAIN = {
    "schedule": "discrete",
    "mixed_precision": "no",
    "batch_size": 4,
    "lr": 1e-3,
    "warmup_steps": 1,
    "n_steps": 3,
    "p_uncond": 0.25,
    "log_interval": 1,
    "save_interval": 3,
    "seed": 0,
    "data": {"random_flip": True, "num_workers": 0},
}


def cropped(raw_root: str, manifest) -> np.ndarray:
    """uint8 (N, 3, 32, 32) ADM-cropped images (§7.1), independently of the extraction code."""
    return np.stack(
        [to_uint8_chw(center_crop_adm(load_rgb(Path(raw_root) / p), 32)) for p in manifest["path"]]
    )


def test_pixel_store_holds_the_cropped_images_and_labels(demo_chain, demo_params):
    manifest = demo_chain["image_manifest"]
    store = FeatureStore(demo_chain["image_features"])
    x = store.read_all("x")
    assert x.shape == (len(manifest), 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(store.read_all("label"), manifest["label"].to_numpy())
    first = manifest.iloc[:3]
    assert np.array_equal(x[:3], cropped(demo_chain["raw_images"], first))
    meta = store.meta
    assert (meta["kind"], meta["resolution"], meta["crop"]) == ("pixels", 32, "adm")
    assert meta["flip"] == "random_at_train_time"  # pixel stores are flipped by the data loader
    assert Path(demo_chain["image_features"]).parent == Path(demo_params["paths"]["staging"])


def test_latent_store_holds_fp16_moments_of_originals_and_flips(latent_chain, vae_dir):
    store = FeatureStore(latent_chain["image_features"])
    manifest = latent_chain["image_manifest"]
    moments = store.read_all("moments")
    assert len(store) == N_LATENT
    assert moments.shape == (N_LATENT, 2, 8, 4, 4) and moments.dtype == np.float16
    assert np.array_equal(store.read_all("label"), manifest["label"].to_numpy())
    assert list(store.manifest["path"]) == list(manifest["path"])

    vae = ae.load_autoencoder(vae_dir)
    images = torch.from_numpy(cropped(latent_chain["raw_images"], manifest)).float() / 127.5 - 1
    expect_orig = ae.encode_moments(vae, images).numpy()
    expect_flip = ae.encode_moments(vae, images.flip(-1)).numpy()  # mirror of the crop (§7.1)
    np.testing.assert_allclose(moments[:, 0].astype(np.float32), expect_orig, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(moments[:, 1].astype(np.float32), expect_flip, rtol=2e-3, atol=2e-3)
    assert not np.allclose(moments[:, 0], moments[:, 1])  # the two views really differ


def test_latent_store_meta_records_encoder_and_preprocessing(latent_chain, vae_dir):
    meta = FeatureStore(latent_chain["image_features"]).meta
    vae = ae.load_autoencoder(vae_dir)
    assert meta["kind"] == "latent_moments" and meta["flip"] == "stored"
    assert meta["resolution"] == 32 and meta["crop"] == "adm" and meta["scale_factor"] == 0.18215
    assert meta["encoder"] == str(vae_dir)
    assert meta["encoder_sha256"] == ae.state_dict_sha256(vae)
    assert meta["fields"]["moments"] == {"shape": [2, 8, 4, 4], "dtype": "float16"}


def test_posterior_sampling_and_scale_factor(latent_chain):
    """z = (mean + exp(½ logvar)·ε)·scale (§4.5): per-element mean and std over many draws."""
    store = FeatureStore(latent_chain["image_features"])
    moments = torch.from_numpy(store.get("moments", 0)[0].astype(np.float32))
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
    # per-channel spread follows the logvar biases of the tiny VAE (channel 3 widest)
    assert std[3].mean() > std[0].mean()


def test_interrupted_extraction_resumes_in_the_same_staging_folder(
    latent_chain, tmp_path, monkeypatch
):
    params = with_section(latent_chain["params"], "paths", staging=str(tmp_path / "staging"))
    inputs = {k: latent_chain[k] for k in ("raw_images", "image_manifest", "autoencoder")}
    real, calls = ae.encode_moments, {"n": 0}

    def flaky(vae, x):
        calls["n"] += 1
        if calls["n"] == 3:  # two blocks written, the third one's batch dies
            raise RuntimeError("simulated crash during encoding")
        return real(vae, x)

    monkeypatch.setattr(ae, "encode_moments", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(create_pipeline(), inputs, params)
    (staging,) = [p for p in (tmp_path / "staging").iterdir() if p.is_dir()]
    assert staging.name.startswith("features-")
    # two blocks written (one file each, merged into the store at the end), the store not complete
    blocks = sorted(p.name for p in (staging / "blocks").glob("block-*.npz"))
    assert blocks == ["block-000000.npz", "block-000001.npz"]
    assert not json.loads((staging / "meta.json").read_text())["complete"]

    out = Path(run(create_pipeline(), inputs, params)["image_features"])
    assert out == staging  # same inputs and settings -> same folder -> resumed there
    assert calls["n"] == 4  # only the missing third block was encoded again
    assert not (out / "blocks").exists()  # merged into the store, then removed
    resumed, full = FeatureStore(out), FeatureStore(latent_chain["image_features"])
    assert len(resumed) == len(full) == N_LATENT
    assert list(resumed.manifest["path"]) == list(full.manifest["path"])
    assert list(resumed.manifest["row"]) == list(range(N_LATENT))
    assert np.array_equal(resumed.read_all("moments"), full.read_all("moments"))
    assert np.array_equal(resumed.read_all("label"), full.read_all("label"))

    # another setting is another store, in another folder: the first one is left as it was
    other = with_section(params, "features", scale_factor=0.23010)
    elsewhere = Path(run(create_pipeline(), inputs, other)["image_features"])
    assert elsewhere != out and elsewhere.parent == out.parent
    assert FeatureStore(elsewhere).meta["scale_factor"] == 0.23010
    assert FeatureStore(out).meta["scale_factor"] == 0.18215


def test_latent_store_needs_an_autoencoder(latent_chain):
    inputs = {**{k: latent_chain[k] for k in ("raw_images", "image_manifest")}, "autoencoder": None}
    with pytest.raises(ValueError, match="features.kind is latent_moments.*`autoencoder`"):
        run(create_pipeline(), inputs, latent_chain["params"])


@pytest.mark.parametrize(
    ("field", "value"), [("scale_factor", 0.23010), ("resolution", 64), ("crop", "none")]
)
def test_training_refuses_a_store_built_with_other_settings(latent_chain, tmp_path, field, value):
    features = {**latent_chain["params"]["features"], field: value}
    cfg = make_train_config(
        TINY_UVIT, TRAIN, {"cpu": True}, features, latent_chain["image_features"], str(tmp_path)
    )
    with pytest.raises(FeatureStoreMismatch, match=field) as err:
        train(cfg)
    assert set(err.value.mismatches) == {field}
    assert not list(Path(cfg.run_dir).glob("ckpts/*"))  # refused before any training state


def test_bad_launcher_settings_are_refused_before_any_work(latent_chain, tmp_path):
    """The extraction runs on the `launcher` section's processes, checked before a staging folder."""
    params = with_section(latent_chain["params"], "paths", staging=str(tmp_path / "staging"))
    params = with_section(params, "launcher", num_processes=3, num_machines=2)
    inputs = {k: latent_chain[k] for k in ("raw_images", "image_manifest", "autoencoder")}
    with pytest.raises(ValueError, match="multiple of launcher.num_machines"):
        run(create_pipeline(), inputs, params)
    assert not (tmp_path / "staging").exists()
