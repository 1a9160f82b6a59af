"""The feature network behind a Fréchet distance: FID Inception, or the demo's small classifier.

A distance computed in the demo classifier's feature space is reported as ``demo_fd``, never ``fid``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from uvit_pipeline._io import atomic_write_json, read_json

from . import demo_classifier, fid

METRIC_NAMES = {"inception_v3_fid": "fid", "demo_classifier": "demo_fd"}


def write_network_dir(out_dir: str | Path, info: dict) -> Path:
    """Record which feature network a folder holds (`network.json`, written atomically, last)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "network.json", info)
    return out


def load_feature_network(path: str | Path, device: str = "cpu", batch_size: int = 200):
    """Directory written by the fid_reference pipeline -> (info dict, features_fn(uint8 NCHW) -> (N, d))."""
    path = Path(path)
    info = read_json(path / "network.json", "Delete the folder and re-run fid_reference")
    if info["network"] == "demo_classifier":
        model = demo_classifier.load_classifier(path / "classifier.safetensors", device=device)

        def features(images: np.ndarray) -> np.ndarray:
            return demo_classifier.classifier_features(model, images, batch_size=batch_size)

        return info, features, model
    model = fid.load_inception(info.get("weights"), device=device)

    def features(images: np.ndarray) -> np.ndarray:
        return fid.inception_activations(images, model, batch_size=batch_size, device=device)

    return info, features, None


FeatureFn = Callable[[np.ndarray], np.ndarray]
