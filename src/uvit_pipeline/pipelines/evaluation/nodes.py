"""Nodes of the `evaluation` pipeline."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from uvit_pipeline.diffusion import get_schedule
from uvit_pipeline.launch import LaunchSpec, run_under_accelerate
from uvit_pipeline.metrics.fid import frechet_distance, statistics
from uvit_pipeline.metrics.network import METRIC_NAMES, load_feature_network
from uvit_pipeline.pipelines.params import validate_evaluation
from uvit_pipeline.sampling import collect, generate_samples, generate_to_dir, image_grid
from uvit_pipeline.training import load_checkpoint_dir, load_uvit_from_checkpoint

log = logging.getLogger(__name__)
STAGING = Path("data/07_model_output/.staging")


def _class_setup(config: dict) -> tuple[int | None, int | None]:
    """(number of real classes, null label) from the checkpoint's config; (None, None) if unconditional."""
    num_classes = int(config["model_kwargs"].get("num_classes", -1))
    if num_classes <= 0:
        return None, None
    if (
        float(config.get("p_uncond", 0.0)) > 0
    ):  # trained with label dropping: last index is the null class
        return num_classes - 1, num_classes - 1
    return num_classes, None


def _label_probs(config: dict, evaluation: dict, n_real: int | None) -> list[float] | None:
    """`evaluation.labels: train_frequencies`: class frequencies of the training feature store (§3.3)."""
    if evaluation.get("labels", "uniform") == "uniform" or n_real is None:
        return None
    from uvit_pipeline.data.feature_store import FeatureStore

    store = config.get("data", {}).get("path")
    if not store or not Path(store).is_dir():
        raise ValueError(
            f"evaluation.labels=train_frequencies needs the training feature store, but the "
            f"checkpoint's store {store!r} is not available; use evaluation.labels=uniform"
        )
    counts = np.bincount(FeatureStore(store).read_all("label"), minlength=n_real)[:n_real]
    return (counts / counts.sum()).tolist()


def sampling_spec(uvit_checkpoint: str, config: dict, evaluation: dict, features: dict) -> dict:
    """Everything the sampling job needs; its hash names the staging folder, so a rerun resumes there."""
    n_real, null = _class_setup(config)
    if evaluation["cfg_scale"] > 0 and null is None:
        raise ValueError(
            "evaluation.cfg_scale > 0 needs a model trained with label dropping (training.p_uncond > 0)"
        )
    latent = config.get("data", {}).get("kind") == "latent_moments"
    spec = {
        "checkpoint": str(Path(uvit_checkpoint).resolve()),
        "which": "ema" if evaluation["use_ema"] else "raw",
        "n_samples": evaluation["n_samples"],
        "batch_size": evaluation["batch_size"],
        "sampler": evaluation["sampler"],
        "steps": evaluation["steps"],
        "cfg_scale": evaluation["cfg_scale"],
        "clip_x0": evaluation["clip_x0"],
        "seed": evaluation["seed"],
        "num_real_classes": n_real,
        "null_label": null,
        "device": evaluation.get("device", "cpu"),
        "autoencoder": (evaluation.get("autoencoder") or features.get("autoencoder"))
        if latent
        else None,
        "scale_factor": config.get("data", {}).get("scale_factor"),
        "decode_batch_size": evaluation.get("decode_batch_size", 50),
    }
    spec["label_probs"] = _label_probs(config, evaluation, n_real)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    spec["out_dir"] = str((STAGING / key).resolve())
    return spec


def _generate(spec: dict, evaluation: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """In this process, or under `accelerate launch` with `evaluation.num_processes` ranks (50K scale)."""
    procs = int(evaluation.get("num_processes", 1))
    if procs > 1:
        work = Path(spec["out_dir"]).parent
        work.mkdir(parents=True, exist_ok=True)
        spec_path = work / (Path(spec["out_dir"]).name + ".json")
        spec_path.write_text(json.dumps(spec, indent=2))
        run_under_accelerate(
            LaunchSpec(num_processes=procs, cpu=spec["device"] == "cpu"),
            work,
            "uvit_pipeline.sampling",
            ["--spec", str(spec_path)],
            what="sampling child",
            log_path=work / (Path(spec["out_dir"]).name + ".log"),
        )
    else:
        generate_to_dir(spec)
    return collect(spec["out_dir"], spec["n_samples"], spec["batch_size"])


def evaluate(
    uvit_checkpoint: str,
    reference_stats: dict,
    feature_network: str,
    evaluation: dict,
    features: dict,
):
    """Sample with the EMA weights, compute the Fréchet distance to the reference (named after the
    feature network: `fid` or `demo_fd`), class accuracy for class-conditional demo models, and a grid."""
    validate_evaluation(evaluation)
    info, features_fn, classifier = load_feature_network(feature_network)
    if info["network"] != reference_stats["network"]:
        raise ValueError(
            f"reference_stats were computed with {reference_stats['network']}, the feature network "
            f"is {info['network']}: re-run the fid_reference pipeline"
        )
    config, _, _ = load_checkpoint_dir(uvit_checkpoint)
    spec = sampling_spec(uvit_checkpoint, config, evaluation, features)
    samples, labels = _generate(spec, evaluation)

    mu, sigma = statistics(features_fn(samples))
    metrics = {
        METRIC_NAMES[info["network"]]: frechet_distance(
            mu, sigma, reference_stats["mu"], reference_stats["sigma"]
        )
    }
    if classifier is not None and labels is not None:
        from uvit_pipeline.metrics.demo_classifier import classifier_accuracy

        metrics["demo_class_accuracy"] = classifier_accuracy(classifier, samples, labels)
    log.info("Evaluation: %s", json.dumps(metrics))

    # Grid: row i = class i (first 10 classes), or rows of unconditional samples; made in this process.
    cols, n_real = evaluation["grid_columns"], spec["num_real_classes"]
    rows = min(n_real, 10) if n_real else 4
    nnet = load_uvit_from_checkpoint(uvit_checkpoint, which=spec["which"]).to(spec["device"])
    decode = None
    if spec["autoencoder"]:
        from uvit_pipeline.encoders.autoencoder import decode_latents, load_autoencoder_spec

        vae = load_autoencoder_spec(spec["autoencoder"], spec["device"])

        def decode(z):
            return decode_latents(
                vae, z, float(spec["scale_factor"]), chunk_size=spec["decode_batch_size"]
            )

    mk = config["model_kwargs"]
    grid = generate_samples(
        nnet,
        get_schedule(config["schedule"]),
        n=rows * cols,
        batch_size=rows * cols,
        sample_shape=(mk["in_chans"], mk["img_size"], mk["img_size"]),
        sampler=spec["sampler"],
        steps=spec["steps"],
        labels=None if not n_real else torch.arange(rows).repeat_interleave(cols),
        null_label=spec["null_label"],
        cfg_scale=spec["cfg_scale"],
        clip_x0=spec["clip_x0"],
        decode=decode,
        seed=spec["seed"] + 1,
        device=spec["device"],
        progress=False,
    )

    report = {
        **metrics,
        "n_samples": spec["n_samples"],
        "sampler": spec["sampler"],
        "steps": spec["steps"],
        "cfg_scale": spec["cfg_scale"],
        "clip_x0": spec["clip_x0"],
        "weights": spec["which"],
        "feature_network": info["network"],
        "checkpoint": uvit_checkpoint,
    }
    out = Path(spec["out_dir"] + ".final")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if evaluation.get("save_samples"):
        # ADM evaluator format: arr_0 = uint8 (N, H, W, 3), arr_1 = class labels
        extra = {} if labels is None else {"arr_1": labels}
        np.savez(out / "samples.npz", arr_0=samples.transpose(0, 2, 3, 1), **extra)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    shutil.rmtree(
        spec["out_dir"], ignore_errors=True
    )  # the chunks were only kept to resume sampling
    mlflow_metrics = {k: {"value": float(v), "step": 0} for k, v in metrics.items()}
    return mlflow_metrics, report, Image.fromarray(image_grid(grid, cols)), str(out)
