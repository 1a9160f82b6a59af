"""Evaluation metrics: FID with pytorch-fid's Inception (§6) and the offline demo classifier."""

from uvit_pipeline.metrics.fid import (
    FID_WEIGHTS_FILENAME,
    FID_WEIGHTS_URL,
    activations_from_png_dir,
    frechet_distance,
    inception_activations,
    load_inception,
    load_stats,
    save_stats,
    statistics,
)

__all__ = [
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_URL",
    "activations_from_png_dir",
    "frechet_distance",
    "inception_activations",
    "load_inception",
    "load_stats",
    "save_stats",
    "statistics",
]
