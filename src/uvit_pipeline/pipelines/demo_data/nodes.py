"""Nodes of the `demo_data` pipeline."""

from __future__ import annotations

import tempfile
from pathlib import Path

from uvit_pipeline.data.demo import generate_demo_data

STAGING = Path("data/01_raw/.staging")


def generate_demo(demo: dict) -> tuple[str, str, dict]:
    """Write the synthetic set in the ImageNet and COCO 2014 layouts; the catalog moves them into place."""
    STAGING.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="demo-", dir=STAGING))
    summary = generate_demo_data(root, n_per_class=demo["n_per_class"],
                                 image_size=demo["image_size"], seed=demo["seed"])
    return str(root / "imagenet"), str(root / "coco"), summary
