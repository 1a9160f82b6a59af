"""Nodes of the `demo_data` pipeline."""

from __future__ import annotations

from uvit_pipeline.data.demo import generate_demo_data
from uvit_pipeline.pipelines._staging import staging_dir


def generate_demo(demo_data: dict, paths: dict) -> tuple[str, dict]:
    """The seeded synthetic set in the layout the demo experiment reads (`demo_data.layout`: the
    ImageNet folder layout or COCO 2014 with captions). Built once per setting in the staging area (a rerun
    reuses it); the catalog copies it to the demo's own raw folder."""
    params = {k: demo_data[k] for k in ("n_per_class", "image_size", "seed")}
    root = staging_dir(paths["staging"], "demo-data", params)
    summary = generate_demo_data(root, **params)
    return str(root / demo_data["layout"]), summary
