"""Evaluation metrics: FID with pytorch-fid's Inception (§6) and the offline demo classifier."""

from uvit_pipeline.metrics.demo_classifier import (
    DemoClassifier,
    classifier_accuracy,
    classifier_features,
    demo_fd,
    demo_fd_statistics,
    load_classifier,
    save_classifier,
    train_demo_classifier,
)
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
    "DemoClassifier",
    "activations_from_png_dir",
    "classifier_accuracy",
    "classifier_features",
    "demo_fd",
    "demo_fd_statistics",
    "frechet_distance",
    "inception_activations",
    "load_classifier",
    "load_inception",
    "load_stats",
    "save_classifier",
    "save_stats",
    "statistics",
    "train_demo_classifier",
]
