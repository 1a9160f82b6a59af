"""Nodes of the `guidance_sweep` pipeline: the metric as a function of the CFG scale."""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from uvit_pipeline.pipelines._figures import figure_image, new_figure
from uvit_pipeline.pipelines._sampling import run_sampling, sampling_spec, score_sample_dir
from uvit_pipeline.pipelines._staging import staging_dir

log = logging.getLogger(__name__)


def _plot(results: list[dict]) -> Image.Image:
    scales = [r["cfg_scale"] for r in results]
    metrics = [k for k in results[0] if k != "cfg_scale"]
    fig, axes = new_figure(4.5 * len(metrics), 3.6)
    fig.clf()
    for i, name in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        ax.plot(scales, [r[name] for r in results], marker="o")
        ax.set_xlabel("CFG scale s  (ε = (1+s)·ε_c − s·ε_u)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    return figure_image(fig)


def sweep_guidance(
    uvit_checkpoint: str,
    text_features: str | None,
    autoencoder: str | None,
    decoder: str | None,
    reference_stats: dict,
    feature_network: str,
    evaluation: dict,
    launcher: dict,
    paths: dict,
) -> tuple[dict, Image.Image]:
    """Sample and score once per scale in `evaluation.cfg_sweep` (each resumable on its own), over
    every process of the `launcher` launch."""
    scales = list(evaluation["cfg_sweep"])
    if not scales:
        raise ValueError("evaluation.cfg_sweep is empty: list the CFG scales to compare")
    results = []
    for scale in scales:
        params = {**evaluation, "cfg_scale": float(scale)}
        spec = sampling_spec(
            uvit_checkpoint,
            autoencoder,
            decoder,
            params,
            text_features=text_features,
            n_samples=params["n_samples"],
            batch_size=params["batch_size"],
            seed=params["seed"],
            cfg_param="evaluation.cfg_sweep",
        )
        folder = staging_dir(paths["staging"], "sweep", spec.to_dict())
        run_sampling(spec, Path(folder), launcher)
        metrics = score_sample_dir(
            str(folder),
            reference_stats,
            feature_network,
            None,
            text_features,
            device=params["device"],
            launcher=launcher,
            staging=paths["staging"],
        )
        log.info("CFG scale %s: %s", scale, metrics)
        results.append({"cfg_scale": float(scale), **metrics})
    table = {"results": results}
    # flat numbers for MLflow: sweep.<metric>.cfg_<s>
    for r in results:
        for name, value in r.items():
            if name != "cfg_scale":
                table[f"sweep.{name}.cfg_{r['cfg_scale']:g}"] = value
    return table, _plot(results)
