"""Training the demo autoencoder: it learns to reconstruct, and loads back through the real path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uvit_pipeline.data import generate_demo_data
from uvit_pipeline.data.extract import load_images
from uvit_pipeline.data.ingest import scan_imagenet_folder
from uvit_pipeline.encoders import autoencoder as ae
from uvit_pipeline.encoders.train_autoencoder import (
    demo_autoencoder,
    reconstruct,
    reconstruction_error,
    train_autoencoder,
)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-ae")
    generate_demo_data(root, n_per_class=8, image_size=16, seed=0)
    manifest, _ = scan_imagenet_folder(root / "imagenet", workers=1, progress=False)
    return load_images(root / "imagenet", manifest, crop="none", resolution=16, workers=1)


def test_training_reduces_reconstruction_error_and_round_trips(images, tmp_path):
    kw = dict(steps=60, batch_size=16, lr=3e-3, downsample=4, widths=(8, 16, 16), held_out=16)
    vae, report = train_autoencoder(images, seed=0, **kw)
    assert report["held_out_mse"] < 0.7 * report["held_out_mse_untrained"], report
    assert report["held_out_psnr_db"] > report["held_out_psnr_db_untrained"]
    assert report["latent_shape"] == [4, 4, 4] and report["downsample_factor"] == 4
    assert report["scale_factor"] == pytest.approx(1 / report["latent_std"])
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())

    # Same class and loading path as the SD VAE: save_pretrained -> load_autoencoder.
    vae.save_pretrained(tmp_path / "vae")
    loaded = ae.load_autoencoder(tmp_path / "vae")
    assert ae.state_dict_sha256(loaded) == ae.state_dict_sha256(vae)
    assert ae.autoencoder_identity(loaded, tmp_path / "vae")["downsample_factor"] == 4
    np.testing.assert_array_equal(reconstruct(loaded, images[:8]), reconstruct(vae, images[:8]))
    moments = ae.encode_moments(loaded, torch.from_numpy(images[:2]).float() / 127.5 - 1)
    assert moments.shape == (2, 8, 4, 4)


def test_training_is_seeded(images):
    kw = dict(steps=3, batch_size=8, downsample=4, widths=(8, 8, 8), held_out=8)
    a, b, c = (train_autoencoder(images, seed=s, **kw)[0] for s in (0, 0, 1))
    assert ae.state_dict_sha256(a) == ae.state_dict_sha256(b) != ae.state_dict_sha256(c)


def test_reconstruction_error_of_identity_images_is_measured(images):
    err = reconstruction_error(demo_autoencoder(downsample=2, widths=(8, 8)), images[:4])
    assert 0 < err["mse"] < 1 and np.isfinite(err["psnr_db"])


def test_bad_arguments_name_the_parameter(images):
    with pytest.raises(ValueError, match="downsample"):
        demo_autoencoder(downsample=3)
    with pytest.raises(ValueError, match="widths"):
        demo_autoencoder(downsample=4, widths=(8, 8))
    with pytest.raises(ValueError, match="not divisible"):
        train_autoencoder(images[:, :, :12, :12], steps=1, downsample=8, held_out=2)
    with pytest.raises(ValueError, match="uint8"):
        train_autoencoder(images.astype(np.float32), steps=1, held_out=2)
    with pytest.raises(ValueError, match="held_out"):
        train_autoencoder(images, steps=1, held_out=len(images))
