"""Tiny feature stores and configs for the training tests (8 px images, dim-32 depth-2 UViT)."""

from __future__ import annotations

import numpy as np
import pytest

from uvit_pipeline.data import FeatureStoreWriter
from uvit_pipeline.training import TrainConfig

TINY_MODEL = dict(img_size=8, patch_size=2, in_chans=3, embed_dim=32, depth=2, num_heads=2)


def write_pixel_store(root, n: int = 16, size: int = 8, num_classes: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    fields = {"x": ((3, size, size), "uint8"), "label": ((), "int64")}
    meta = {"kind": "pixels", "resolution": size, "dataset": "unit-test"}
    with FeatureStoreWriter(root, meta=meta, fields=fields, shard_size=8) as w:
        w.add(
            {
                "x": rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8),
                "label": rng.integers(0, num_classes, n).astype(np.int64),
            }
        )
    return root


def write_latent_store(root, n: int = 12, h: int = 4, num_classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    fields = {"moments": ((2, 8, h, h), "float16"), "label": ((), "int64")}
    meta = {"kind": "latent_moments", "resolution": 8 * h, "dataset": "unit-test"}
    moments = rng.standard_normal((n, 2, 8, h, h)).astype(np.float16)
    moments[:, :, 4:] = -2.0  # logvar: small posterior std
    with FeatureStoreWriter(root, meta=meta, fields=fields, shard_size=8) as w:
        w.add({"moments": moments, "label": rng.integers(0, num_classes, n).astype(np.int64)})
    return root


@pytest.fixture(scope="session")
def pixel_store(tmp_path_factory):
    return write_pixel_store(tmp_path_factory.mktemp("pixel_store"))


@pytest.fixture(scope="session")
def latent_store(tmp_path_factory):
    return write_latent_store(tmp_path_factory.mktemp("latent_store"))


def tiny_config(run_dir, store, **overrides) -> TrainConfig:
    """A config that trains the tiny model for a handful of CPU steps."""
    d = dict(
        model=dict(TINY_MODEL),
        data={"path": str(store), "kind": "pixels", "random_flip": True},
        batch_size=4,
        mixed_precision="no",  # the CPU: conf/base's fp16 is for GPUs
        lr=1e-3,
        betas=[0.99, 0.999],
        warmup_steps=2,
        n_steps=6,
        ema_rate=0.9,
        log_interval=2,
        save_interval=3,
        keep_last=2,
        run_dir=str(run_dir),
        cpu=True,
    )
    d.update(overrides)
    d["data"] = {"num_workers": 0, **d["data"]}  # in-process loading (conf/base: 8 workers)
    return TrainConfig.from_dict(d)
