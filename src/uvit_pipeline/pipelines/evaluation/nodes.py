"""Nodes of the `evaluation` pipeline: sample -> score -> grid -> report, with catalog entries between
them, so a metric can be recomputed or a grid redrawn without sampling again."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from uvit_pipeline._io import atomic_write_json
from uvit_pipeline.launch import LaunchSpec, run_under_accelerate
from uvit_pipeline.metrics.fid import frechet_distance, statistics
from uvit_pipeline.metrics.network import METRIC_NAMES, load_feature_network
from uvit_pipeline.pipelines._staging import staging_dir
from uvit_pipeline.sampling import collect, generate_to_dir
from uvit_pipeline.training import load_checkpoint_dir

log = logging.getLogger(__name__)


def _class_setup(config: dict) -> tuple[int | None, int | None]:
    """(number of real classes, null label) from the checkpoint's config; (None, None) if unconditional."""
    num_classes = int(config["model_kwargs"].get("num_classes", -1))
    if num_classes <= 0:
        return None, None
    if float(config.get("p_uncond", 0.0)) > 0:  # trained with label dropping: last index = null
        return num_classes - 1, num_classes - 1
    return num_classes, None


def _store_classes(image_features: str | None) -> int | None:
    """How many classes the training store's labels span (max label + 1); None without a store."""
    if image_features is None or not (Path(image_features) / "meta.json").is_file():
        return None
    from uvit_pipeline.data.feature_store import FeatureStore

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
    from uvit_pipeline.data.feature_store import FeatureStore

    counts = np.bincount(FeatureStore(image_features).read_all("label"), minlength=n_real)[:n_real]
    return (counts / counts.sum()).tolist()


def sampling_spec(
    uvit_checkpoint: str,
    decoder: str | None,
    evaluation: dict,
    *,
    text_features: str | None = None,
    n_samples: int,
    batch_size: int,
    seed: int,
    labels: list[int] | None = None,
    label_probs: list[float] | None = None,
    cfg_param: str = "evaluation.cfg_scale",
) -> dict:
    """Everything a sampling job needs (`sampling.generate_to_dir`); `cfg_param` names the parameter
    the guidance scale comes from in errors."""
    config, _, _ = load_checkpoint_dir(uvit_checkpoint)
    n_real, null = _class_setup(config)
    is_text = config["model_kwargs"].get("clip_dim") is not None
    if is_text and text_features is None:
        raise ValueError(
            "the checkpoint is a text-to-image model: its samples are conditioned on captions from "
            "the catalog entry text_features (run the text_features pipeline first)"
        )
    if evaluation["cfg_scale"] > 0 and null is None and not is_text:
        what = "an unconditional model" if n_real is None else "a model without a null class"
        raise ValueError(
            f"{cfg_param}: a CFG scale > 0 ({evaluation['cfg_scale']}) needs a model trained with "
            f"label dropping (training.p_uncond > 0), the checkpoint is {what}; use scale 0"
        )
    latent = config.get("data", {}).get("kind") == "latent_moments"
    if latent and decoder is None:
        raise ValueError(
            "the checkpoint is a latent model: the catalog entry `autoencoder` (or `decoder`) "
            "must name the autoencoder that decodes its samples"
        )
    return {
        "checkpoint": str(Path(uvit_checkpoint).resolve()),
        "which": "ema" if evaluation["use_ema"] else "raw",
        "n_samples": n_samples,
        "batch_size": batch_size,
        "sampler": evaluation["sampler"],
        "steps": evaluation["steps"],
        "cfg_scale": evaluation["cfg_scale"],
        "clip_x0": evaluation["clip_x0"],
        "seed": seed,
        "num_real_classes": n_real,
        "null_label": null,
        "labels": labels,
        "label_probs": label_probs,
        "device": evaluation["device"],
        "autoencoder": decoder if latent else None,
        "scale_factor": config.get("data", {}).get("scale_factor"),
        "decode_batch_size": evaluation["decode_batch_size"],
        "text_features": str(text_features) if is_text else None,
        "text_split": "val",
    }


def run_sampling(spec: dict, folder: Path, num_processes: int) -> None:
    """In this process, or under `accelerate launch` with several ranks (50K-sample evaluations)."""
    atomic_write_json(folder / "spec.json", spec)  # what the chunks are (read by the scoring node)
    spec = {**spec, "out_dir": str(folder)}
    if num_processes > 1:
        spec_file = atomic_write_json(folder.with_suffix(".spec.json"), spec)
        run_under_accelerate(
            LaunchSpec(num_processes=num_processes, cpu=spec["device"] == "cpu"),
            folder.parent,
            "uvit_pipeline.sampling",
            ["--spec", str(spec_file)],
            what="sampling child",
            log_path=folder.with_suffix(".log"),
        )
    else:
        generate_to_dir(spec)


def sample_for_evaluation(
    uvit_checkpoint: str,
    image_features: str | None,
    text_features: str | None,
    autoencoder: str | None,
    decoder: str | None,
    evaluation: dict,
    paths: dict,
) -> str:
    """`evaluation.n_samples` samples (EMA weights, the environment's sampler and guidance) as uint8
    chunks with their labels; resumable chunk by chunk, independent of the number of processes."""
    config, _, _ = load_checkpoint_dir(uvit_checkpoint)
    n_real, _ = _class_setup(config)
    spec = sampling_spec(
        uvit_checkpoint,
        decoder or autoencoder,
        evaluation,
        text_features=text_features,
        n_samples=evaluation["n_samples"],
        batch_size=evaluation["batch_size"],
        seed=evaluation["seed"],
        label_probs=_label_probs(image_features, evaluation, n_real),
    )
    folder = staging_dir(paths["staging"], "samples", spec)
    run_sampling(spec, folder, evaluation["num_processes"])
    if evaluation["save_adm_npz"]:
        images, labels = collect(folder, spec["n_samples"], spec["batch_size"])
        # ADM evaluator format: arr_0 = uint8 (N, H, W, 3), arr_1 = class labels
        extra = {} if labels is None else {"arr_1": labels}
        np.savez(folder / "samples_adm.npz", arr_0=images.transpose(0, 2, 3, 1), **extra)
    return str(folder)


def metric_name(base: str, spec: dict) -> str:
    """`fid` only under the paper's protocol (§3.3: 50,000 samples, 30,000 for MS-COCO; guided when
    the model can be): `fid10k` for fewer samples, `..._noguidance` for an unguided CFG model."""
    if base != "fid":
        return base  # the demo's distance is demo_fd whatever its settings
    n, full = spec["n_samples"], 30_000 if spec.get("text_features") else 50_000
    name = base if n >= full else f"fid{n // 1000}k" if n >= 1000 else f"fid{n}"
    guidable = spec.get("null_label") is not None or bool(spec.get("text_features"))
    return f"{name}_noguidance" if guidable and spec["cfg_scale"] == 0 else name


def _text_pairs(generated_samples: str, spec: dict, text_features: str):
    """(caption of each sample, class of the image it came from) for text-to-image samples."""
    from uvit_pipeline.data.text_features import TextFeatures
    from uvit_pipeline.sampling.generate import collect_caption_rows

    caption_rows, _ = collect_caption_rows(generated_samples, spec["n_samples"], spec["batch_size"])
    manifest = TextFeatures(text_features).split("val").store.manifest
    rows = manifest.iloc[caption_rows]
    return rows["caption"].tolist(), rows["image_label"].to_numpy()


def score_samples(
    generated_samples: str,
    reference_stats: dict,
    feature_network: str,
    clip_model: str | None,
    text_features: str | None,
    evaluation: dict,
) -> dict:
    """Fréchet distance to the reference statistics, named after the feature network (`fid`, or
    `demo_fd` for the demo's classifier: never called FID); the demo's class accuracy (for text
    models: the class of the image whose caption conditioned the sample); the CLIP score of
    text-to-image samples and their captions where a CLIP model is configured."""
    info, features_fn, classifier = load_feature_network(feature_network)
    if info["network"] != reference_stats["network"]:
        raise ValueError(
            f"reference_stats were computed with {reference_stats['network']}, the feature network "
            f"is {info['network']}: re-run the fid_reference pipeline"
        )
    spec = json.loads((Path(generated_samples) / "spec.json").read_text())
    samples, labels = collect(generated_samples, spec["n_samples"], spec["batch_size"])
    mu, sigma = statistics(features_fn(samples))
    name = metric_name(METRIC_NAMES[info["network"]], spec)
    metrics = {name: frechet_distance(mu, sigma, reference_stats["mu"], reference_stats["sigma"])}
    captions = None
    if spec.get("text_features"):
        if text_features is None:
            raise ValueError("text-to-image samples are scored with their captions: text_features")
        captions, labels = _text_pairs(generated_samples, spec, text_features)
    if classifier is not None and labels is not None:
        from uvit_pipeline.metrics.demo_classifier import classifier_accuracy

        metrics["demo_class_accuracy"] = classifier_accuracy(classifier, samples, labels)
    if captions is not None and clip_model is not None:
        from uvit_pipeline.metrics.clip_score import clip_score, load_clip_scorer

        scored = clip_score(
            load_clip_scorer(clip_model, device=evaluation["device"]), samples, captions
        )
        metrics.update({k: v for k, v in scored.items() if isinstance(v, float)})
    log.info("Evaluation on %d samples: %s", len(samples), json.dumps(metrics))
    return metrics


def class_names(image_features: str | None, n_real: int) -> list[str]:
    """Row labels of a class grid: the store's class names where it has them, else the indices."""
    if image_features is not None:
        manifest = Path(image_features) / "manifest.parquet"
        if manifest.is_file():
            m = pd.read_parquet(manifest, columns=["label", "class_name"])
            names = m.drop_duplicates("label").set_index("label")["class_name"].to_dict()
            return [str(names.get(i, i)) for i in range(n_real)]
    return [str(i) for i in range(n_real)]


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
    from uvit_pipeline.sampling import build_sampler
    from uvit_pipeline.sampling.conditions import store_prompt_conditions
    from uvit_pipeline.sampling.grid import sample_grid

    spec = sampling_spec(
        uvit_checkpoint,
        decoder or autoencoder,
        evaluation,
        text_features=text_features,
        n_samples=1,
        batch_size=1,
        seed=evaluation["seed"] + 1,
    )
    setup = build_sampler(spec)
    n_real = spec["num_real_classes"]
    rows = min(n_real, _store_classes(image_features) or n_real, 10) if n_real else None
    return sample_grid(
        setup,
        columns=evaluation["grid_columns"],
        sampler=spec["sampler"],
        steps=spec["steps"],
        cfg_scale=spec["cfg_scale"],
        seed=spec["seed"],
        labels=list(range(rows)) if rows else None,
        null_label=spec["null_label"],
        class_names=class_names(image_features, n_real) if n_real else None,
        text=store_prompt_conditions(text_features, 10) if setup.is_text else None,
        scale=evaluation["grid_scale"],
        clip_x0=spec["clip_x0"],
    )
