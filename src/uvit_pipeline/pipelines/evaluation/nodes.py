"""Nodes of the `evaluation` pipeline: sample -> score -> grid -> report, with catalog entries between
them, so a metric can be recomputed or a grid redrawn without sampling again."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from uvit_pipeline.data.feature_store import FeatureStore
from uvit_pipeline.models.checkpoint import read_checkpoint_info
from uvit_pipeline.pipelines._sampling import (
    run_sampling,
    sampling_spec,
    score_sample_dir,
)
from uvit_pipeline.pipelines._staging import staging_dir
from uvit_pipeline.sampling import build_sampler, class_names, collect
from uvit_pipeline.sampling.conditions import store_prompt_conditions
from uvit_pipeline.sampling.grid import sample_grid

log = logging.getLogger(__name__)


def _store_classes(image_features: str | None) -> int | None:
    """How many classes the training store's labels span (max label + 1); None without a store."""
    if image_features is None or not (Path(image_features) / "meta.json").is_file():
        return None
    labels = FeatureStore(image_features).read_all("label")
    return int(labels.max()) + 1 if labels.size else None


def _label_probs(image_features: str | None, evaluation: dict, n_real: int | None):
    """`evaluation.labels: train_frequencies`: class frequencies of the training store (§3.3).
    `uniform` over a store with fewer classes than the model (e.g. the demo trained on a folder of
    3 classes): uniform over the store's classes, never a class the model saw no image of."""
    if n_real is None:
        return None
    if evaluation["labels"] == "uniform":
        n_data = _store_classes(image_features)
        if n_data is None or n_data >= n_real:
            return None
        return [1.0 / n_data] * n_data + [0.0] * (n_real - n_data)
    if image_features is None:
        raise ValueError(
            "evaluation.labels=train_frequencies needs the training feature store "
            "(catalog entry image_features); use evaluation.labels=uniform without it"
        )
    counts = np.bincount(FeatureStore(image_features).read_all("label"), minlength=n_real)[:n_real]
    return (counts / counts.sum()).tolist()


def sample_for_evaluation(
    uvit_checkpoint: str,
    image_features: str | None,
    text_features: str | None,
    autoencoder: str | None,
    decoder: str | None,
    evaluation: dict,
    launcher: dict,
    paths: dict,
) -> str:
    """`evaluation.n_samples` samples (EMA weights, the environment's sampler and guidance) as uint8
    chunks with their labels, over every process of the `launcher` launch; resumable chunk by
    chunk, the same samples for any number of processes."""
    n_real = read_checkpoint_info(uvit_checkpoint).num_real_classes
    spec = sampling_spec(
        uvit_checkpoint,
        autoencoder,
        decoder,
        evaluation,
        text_features=text_features,
        n_samples=evaluation["n_samples"],
        batch_size=evaluation["batch_size"],
        seed=evaluation["seed"],
        label_probs=_label_probs(image_features, evaluation, n_real),
    )
    folder = staging_dir(paths["staging"], "samples", spec.to_dict())
    run_sampling(spec, folder, launcher)
    if evaluation["save_adm_npz"]:
        images, labels = collect(folder, spec.n_samples, spec.batch_size)
        # ADM evaluator format: arr_0 = uint8 (N, H, W, 3), arr_1 = class labels
        extra = {} if labels is None else {"arr_1": labels}
        np.savez(folder / "samples_adm.npz", arr_0=images.transpose(0, 2, 3, 1), **extra)
    return str(folder)


def score_samples(
    generated_samples: str,
    reference_stats: dict,
    feature_network: str,
    clip_model: str | None,
    text_features: str | None,
    evaluation: dict,
    launcher: dict,
    paths: dict,
) -> dict:
    """The metrics of the samples (`_sampling.score_sample_dir`): FID or demo FD, the demo's class
    accuracy, the CLIP score of text-to-image samples; the networks run over every process of the
    `launcher` launch."""
    return score_sample_dir(
        generated_samples,
        reference_stats,
        feature_network,
        clip_model,
        text_features,
        device=evaluation["device"],
        launcher=launcher,
        staging=paths["staging"],
    )


def render_sample_grid(
    uvit_checkpoint: str,
    image_features: str | None,
    text_features: str | None,
    autoencoder: str | None,
    decoder: str | None,
    evaluation: dict,
):
    """One row per class (the first 10) labelled with its name, per visualisation prompt (written
    under its row), or unconditional samples; upscaled with nearest-neighbour to stay legible."""
    spec = sampling_spec(
        uvit_checkpoint,
        autoencoder,
        decoder,
        evaluation,
        text_features=text_features,
        n_samples=1,
        batch_size=1,
        seed=evaluation["seed"] + 1,
    )
    setup = build_sampler(spec)
    n_real = spec.num_real_classes
    rows = min(n_real, _store_classes(image_features) or n_real, 10) if n_real else None
    return sample_grid(
        setup,
        columns=evaluation["grid_columns"],
        sampler=spec.sampler,
        steps=spec.steps,
        cfg_scale=spec.cfg_scale,
        seed=spec.seed,
        labels=list(range(rows)) if rows else None,
        null_label=spec.null_label,
        class_names=class_names(image_features, n_real) if n_real else None,
        text=store_prompt_conditions(text_features, 10) if setup.is_text else None,
        scale=evaluation["grid_scale"],
        clip_x0=spec.clip_x0,
    )
