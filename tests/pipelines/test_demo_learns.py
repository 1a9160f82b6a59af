"""The demo model learns: briefly trained, it beats the untrained model on demo FD and class accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uvit_pipeline.data.demo import generate_demo_data
from uvit_pipeline.data.extract import extract_features, load_images
from uvit_pipeline.data.ingest import scan_imagenet_folder
from uvit_pipeline.diffusion import get_schedule
from uvit_pipeline.metrics.demo_classifier import (
    classifier_accuracy,
    classifier_features,
    train_demo_classifier,
)
from uvit_pipeline.metrics.fid import frechet_distance, statistics
from uvit_pipeline.models import UViT
from uvit_pipeline.sampling.generate import generate_samples
from uvit_pipeline.training import (
    TrainConfig,
    load_checkpoint_dir,
    load_uvit_from_checkpoint,
    train,
)

MODEL = dict(
    img_size=32, in_chans=3, patch_size=4, embed_dim=64, depth=4, num_heads=2, num_classes=11
)


@pytest.mark.slow
def test_briefly_trained_demo_model_beats_untrained(tmp_path):
    generate_demo_data(tmp_path / "raw", n_per_class=300, image_size=32, seed=0)
    manifest, _ = scan_imagenet_folder(tmp_path / "raw/imagenet", workers=1, progress=False)
    images = load_images(tmp_path / "raw/imagenet", manifest, crop="adm", resolution=32, workers=1)
    labels = manifest["label"].to_numpy()
    classifier, train_acc = train_demo_classifier(images, labels, steps=600, batch_size=64, seed=0)
    assert train_acc > 0.9
    mu_ref, sigma_ref = statistics(classifier_features(classifier, images))

    store = extract_features(
        tmp_path / "raw/imagenet",
        manifest,
        tmp_path / "store",
        meta={"kind": "pixels", "resolution": 32, "crop": "adm"},
        crop="adm",
        resolution=32,
        shard_size=256,
        workers=1,
        progress=False,
    )
    config = TrainConfig.from_dict(
        dict(
            model=MODEL,
            data=dict(path=str(store), kind="pixels", random_flip=True),
            batch_size=32,
            lr=2e-3,
            betas=[0.9, 0.999],
            warmup_steps=50,
            n_steps=4000,
            ema_rate=0.99,
            p_uncond=0.1,
            log_interval=100,
            save_interval=10_000,
            run_dir=str(tmp_path / "run"),
            cpu=True,
        )
    )
    final = train(config)

    def score(nnet) -> tuple[float, float]:
        gen = torch.Generator().manual_seed(0)
        y = torch.randint(0, 10, (300,), generator=gen)
        samples = generate_samples(
            nnet,
            get_schedule("vp_continuous"),
            n=300,
            batch_size=150,
            sample_shape=(3, 32, 32),
            sampler="euler_maruyama",
            steps=50,
            labels=y,
            null_label=10,
            cfg_scale=3.0,  # as the demo samples
            clip_x0=True,
            progress=False,
        )
        mu, sigma = statistics(classifier_features(classifier, samples))
        return frechet_distance(mu, sigma, mu_ref, sigma_ref), classifier_accuracy(
            classifier, samples, y.numpy()
        )

    torch.manual_seed(config.seed)  # the training run's initialisation
    untrained = UViT(**load_checkpoint_dir(final)[0]["model_kwargs"]).eval()
    fd0, acc0 = score(untrained)
    fd1, acc1 = score(load_uvit_from_checkpoint(final, "ema"))
    assert fd1 < 0.5 * fd0, (fd0, fd1)
    assert acc1 > acc0 + 0.05, (acc0, acc1)  # chance is 0.1; 300 samples: std of an accuracy ~0.025
    assert np.isfinite([fd0, fd1]).all()
