"""Nodes of the `demo_autoencoder` pipeline (the latent and text-to-image demos only)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
from PIL import Image

from uvit_pipeline._io import atomic_write_json
from uvit_pipeline.data.sources import training_rows
from uvit_pipeline.encoders.autoencoder import load_autoencoder
from uvit_pipeline.pipelines._references import reference_images
from uvit_pipeline.pipelines._staging import manifest_id, staging_dir

log = logging.getLogger(__name__)


def train_demo_autoencoder(
    raw_images: str,
    image_manifest: pd.DataFrame,
    demo_autoencoder: dict,
    features: dict,
    ingestion: dict,
    paths: dict,
) -> tuple[str, dict, Image.Image]:
    """A tiny KL autoencoder (diffusers `AutoencoderKL`, the class and loading path of the SD VAE the
    paper experiments use) trained on the demo images, so latent samples decode to real images.
    Built once per setting: a rerun finds it in the staging area. Returns the model directory, its
    reconstruction report and a picture of held-out images over their reconstructions."""
    # encoders.train_autoencoder imports diffusers (seconds): only the latent demos run this node
    from uvit_pipeline.encoders.train_autoencoder import reconstruct, train_autoencoder

    p = demo_autoencoder
    image_manifest = training_rows(image_manifest, ingestion["source"])
    identity = {**p, "manifest": manifest_id(image_manifest), "crop": features["crop"],
                "resolution": features["resolution"]}  # fmt: skip
    out = staging_dir(paths["staging"], "demo-autoencoder", identity)
    images, _ = reference_images(raw_images, image_manifest, features, ingestion, None)
    if (out / "report.json").is_file():  # built before with the same settings and images
        report, vae = json.loads((out / "report.json").read_text()), load_autoencoder(out)
        log.info("Demo autoencoder reused from %s", out)
    else:
        vae, report = train_autoencoder(
            images,
            steps=p["steps"],
            batch_size=p["batch_size"],
            lr=p["lr"],
            seed=p["seed"],
            kl_weight=p["kl_weight"],
            downsample=2 ** (len(p["widths"]) - 1),
            widths=list(p["widths"]),
            held_out=p["held_out"],
            progress=True,
        )
        vae.save_pretrained(out)
        atomic_write_json(out / "report.json", report)  # written last: marks the build complete
    shown = images[np.linspace(0, len(images) - 1, 10).round().astype(int)]  # across classes
    rec = reconstruct(vae, shown)
    pairs = np.concatenate(
        [np.concatenate(list(shown), axis=2), np.concatenate(list(rec), axis=2)], 1
    )
    picture = Image.fromarray(pairs.transpose(1, 2, 0)).resize(
        (pairs.shape[2] * 4, pairs.shape[1] * 4), Image.NEAREST
    )
    return str(out), report, picture
