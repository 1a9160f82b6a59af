"""Nodes of the `generate` pipeline: images from any checkpoint for given classes, prompts, or none."""

from __future__ import annotations

import logging
import re

from PIL import Image

from uvit_pipeline._io import atomic_write
from uvit_pipeline.pipelines._staging import staging_dir
from uvit_pipeline.pipelines.evaluation.nodes import (
    _class_setup,
    class_names,
    run_sampling,
    sampling_spec,
)
from uvit_pipeline.sampling import collect
from uvit_pipeline.training import load_checkpoint_dir

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60] or "image"


def _class_indices(classes: list, names: list[str], n_real: int) -> list[int]:
    out = []
    for c in classes:
        if isinstance(c, int):
            if not 0 <= c < n_real:
                raise ValueError(f"generate.classes: {c} is not a class index in [0, {n_real})")
            out.append(c)
        elif c in names:
            out.append(names.index(c))
        else:
            raise ValueError(f"generate.classes: unknown class {c!r}; known: {names}")
    return out


def generate_images(
    uvit_checkpoint: str,
    image_features: str | None,
    autoencoder: str | None,
    decoder: str | None,
    generate: dict,
    paths: dict,
) -> tuple[str, Image.Image]:
    """`generate.n_per_condition` images per requested class (or for an unconditional model), written
    as PNGs named by condition and index, plus a labelled grid."""
    from uvit_pipeline.sampling.grid import labelled_grid

    config, _, _ = load_checkpoint_dir(uvit_checkpoint)
    n_real, _ = _class_setup(config)
    k = generate["n_per_condition"]
    if n_real:
        names = class_names(image_features, n_real)
        wanted = generate["classes"] or list(range(min(n_real, 10)))
        indices = _class_indices(list(wanted), names, n_real)
        labels = [i for i in indices for _ in range(k)]
        row_names = [names[i] for i in indices]
    else:
        if generate["classes"]:
            raise ValueError("generate.classes given, but the checkpoint is an unconditional model")
        labels, row_names = None, [""]
    n = len(labels) if labels is not None else k
    spec = sampling_spec(
        uvit_checkpoint,
        decoder or autoencoder,
        generate,
        n_samples=n,
        batch_size=min(n, generate["batch_size"]),
        seed=generate["seed"],
        labels=labels,
    )
    folder = staging_dir(paths["staging"], "generate", spec)
    run_sampling(spec, folder, 1)
    images, _ = collect(folder, n, spec["batch_size"])
    out = folder / "images"
    out.mkdir(exist_ok=True)
    for i, img in enumerate(images):
        stem = _slug(row_names[i // k]) if n_real else "unconditional"
        path = out / f"{stem}-{i % k:03d}.png"
        atomic_write(path, lambda f, a=img: Image.fromarray(a.transpose(1, 2, 0)).save(f, "PNG"))
    log.info("Wrote %d images to %s", n, out)
    grid = labelled_grid(images, row_names, columns=k, scale=generate["grid_scale"])
    return str(out), grid
