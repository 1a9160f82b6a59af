"""Load an experiment's newest checkpoint as a `UViTGenerator`, through the Kedro catalog.

    from uvit_pipeline.generator import load_generator
    gen = load_generator("demo_t2i")                    # from the project root (or project_path=...)
    images = gen(["a red circle on a dark background"], steps=20, guidance=3, seed=0)

The checkpoint is the newest version of the catalog entry `uvit_checkpoint`
(`data/06_models/<experiment>/uvit_checkpoint/<version>/uvit_checkpoint`); the autoencoder, the text
encoder, the class names and the sampler defaults (the `generate` parameters) come from the same
environment. Outside a project, use `UViTGenerator.from_pretrained(path)` on a checkpoint folder or
a bundle written by `save_pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from uvit_pipeline.sampling.pipeline import UViTGenerator


def load_generator(
    env: str | None = None, project_path: str | os.PathLike | None = None, **kwargs: Any
) -> UViTGenerator:
    """The newest checkpoint of environment `env` (None: the default, `demo`) of the project at
    `project_path` (default: the current folder). `kwargs` go to `UViTGenerator.from_pretrained`
    (device, use_ema, class_names, ...)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project = Path(project_path or Path.cwd()).resolve()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        context = session.load_context()
        return UViTGenerator.from_catalog(
            context.catalog, params=context.params.get("generate"), **kwargs
        )


__all__ = ["UViTGenerator", "load_generator"]
