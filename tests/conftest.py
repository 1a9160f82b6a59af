"""Shared test setup: telemetry off, quiet, deterministic, small thread pools."""

import os

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def vae_dir(tmp_path_factory):
    """Tiny KL-f8-shaped VAE (4 levels -> f=8, 4 latent channels), saved in diffusers format."""
    from uvit_pipeline.encoders.autoencoder import tiny_autoencoder

    path = tmp_path_factory.mktemp("vae") / "tiny-kl-f8"
    tiny_autoencoder(seed=0).save_pretrained(path)
    return path
