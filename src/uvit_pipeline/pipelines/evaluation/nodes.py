"""Nodes of the `evaluation` pipeline."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from uvit_pipeline.diffusion import get_schedule
from uvit_pipeline.metrics.fid import frechet_distance, statistics
from uvit_pipeline.metrics.network import METRIC_NAMES, load_feature_network
from uvit_pipeline.pipelines.validation import validate_evaluation
from uvit_pipeline.training import load_checkpoint_dir, load_uvit_from_checkpoint
from uvit_pipeline.training.generate import generate_samples, image_grid

log = logging.getLogger(__name__)


def _class_setup(config: dict) -> tuple[int | None, int | None]:
    """(number of real classes, null label) from the training config; (None, None) if unconditional."""
    num_classes = int(config["model_kwargs"].get("num_classes", -1))
    if num_classes <= 0:
        return None, None
    if float(config.get("p_uncond", 0.0)) > 0:  # trained with label dropping: last index is the null class
        return num_classes - 1, num_classes - 1
    return num_classes, None


def _decoder(config: dict, evaluation: dict, features: dict, device):
    """Latent models: z -> image in [-1, 1] through the autoencoder's decoder, in chunks (§5.3)."""
    if config.get("data", {}).get("kind") != "latent_moments":
        return None
    from uvit_pipeline.encoders.autoencoder import decode_latents
    from uvit_pipeline.pipelines.features.nodes import open_autoencoder

    vae = open_autoencoder(evaluation.get("autoencoder") or features["autoencoder"], device)
    autocast = torch.float16 if device.type == "cuda" else None  # §4.4: decoding under fp16 autocast
    scale = float(config["data"]["scale_factor"])
    return lambda z: decode_latents(vae, z, scale, chunk_size=evaluation["decode_batch_size"],
                                    autocast_dtype=autocast)


def evaluate(uvit_checkpoint: str, reference_stats: dict, feature_network: str, evaluation: dict,
             features: dict):
    """Sample with the EMA weights, compute the Fréchet distance to the reference (named after the
    feature network: `fid` or `demo_fd`), class accuracy for class-conditional demo models, and a grid."""
    validate_evaluation(evaluation)
    config, _, _ = load_checkpoint_dir(uvit_checkpoint)
    device = torch.device(evaluation.get("device", "cpu"))
    nnet = load_uvit_from_checkpoint(uvit_checkpoint, which="ema" if evaluation["use_ema"] else "raw").to(device)
    schedule = get_schedule(config["schedule"])
    mk = config["model_kwargs"]
    shape = (mk["in_chans"], mk["img_size"], mk["img_size"])
    n_real, null = _class_setup(config)
    if evaluation["cfg_scale"] > 0 and null is None:
        raise ValueError("evaluation.cfg_scale > 0 needs a model trained with label dropping (training.p_uncond > 0)")
    gen = torch.Generator().manual_seed(evaluation["seed"])
    labels = None if n_real is None else torch.randint(0, n_real, (evaluation["n_samples"],), generator=gen)
    common = dict(batch_size=evaluation["batch_size"], sample_shape=shape, sampler=evaluation["sampler"],
                  steps=evaluation["steps"], null_label=null, cfg_scale=evaluation["cfg_scale"],
                  clip_x0=evaluation["clip_x0"], device=device,
                  decode=_decoder(config, evaluation, features, device))
    samples = generate_samples(nnet, schedule, n=evaluation["n_samples"], labels=labels,
                               seed=evaluation["seed"], **common)

    info, features, classifier = load_feature_network(feature_network)
    if info["network"] != reference_stats["network"]:
        raise ValueError(f"reference_stats were computed with {reference_stats['network']}, the feature network "
                         f"is {info['network']}: re-run the fid_reference pipeline")
    mu, sigma = statistics(features(samples))
    name = METRIC_NAMES[info["network"]]
    metrics = {name: frechet_distance(mu, sigma, reference_stats["mu"], reference_stats["sigma"])}
    if classifier is not None and labels is not None:
        from uvit_pipeline.metrics.demo_classifier import classifier_accuracy

        metrics["demo_class_accuracy"] = classifier_accuracy(classifier, samples, labels.numpy())

    # Grid: one row per class (first `grid_columns` classes), or rows of unconditional samples.
    cols = evaluation["grid_columns"]
    rows = min(n_real, 10) if n_real else 4
    grid_labels = None if n_real is None else torch.arange(rows).repeat_interleave(cols)
    grid = generate_samples(nnet, schedule, n=rows * cols, labels=grid_labels, seed=evaluation["seed"] + 1,
                            **common)
    report = {**metrics, "n_samples": evaluation["n_samples"], "sampler": evaluation["sampler"],
              "steps": evaluation["steps"], "cfg_scale": evaluation["cfg_scale"], "clip_x0": evaluation["clip_x0"],
              "weights": "ema" if evaluation["use_ema"] else "raw", "feature_network": info["network"],
              "checkpoint": uvit_checkpoint}
    log.info("Evaluation: %s", json.dumps(metrics))
    mlflow_metrics = {k: {"value": float(v), "step": 0} for k, v in metrics.items()}
    samples_dir = Path(tempfile.mkdtemp(prefix="samples-", dir=Path("data/07_model_output")))
    if evaluation.get("save_samples"):
        # ADM evaluator format: arr_0 = uint8 (N, H, W, 3) (+ arr_1 = labels)
        extra = {} if labels is None else {"arr_1": labels.numpy()}
        np.savez(samples_dir / "samples.npz", arr_0=samples.transpose(0, 2, 3, 1), **extra)
    (samples_dir / "report.json").write_text(json.dumps(report, indent=2))
    return mlflow_metrics, report, Image.fromarray(image_grid(grid, cols)), str(samples_dir)
