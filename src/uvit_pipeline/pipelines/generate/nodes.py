"""Nodes of the `generate` pipeline: images from any checkpoint (trained or imported) for given
prompts, classes, or none (unconditional models)."""

from __future__ import annotations

import hashlib
import logging
import re

import numpy as np
from PIL import Image

from uvit_pipeline._io import atomic_write
from uvit_pipeline.errors import RequestError
from uvit_pipeline.models.checkpoint import read_checkpoint_info
from uvit_pipeline.pipelines._sampling import run_sampling, sampling_spec
from uvit_pipeline.pipelines._staging import staging_dir
from uvit_pipeline.sampling import class_names, collect
from uvit_pipeline.sampling.conditions import check_text_identity, encode_prompt_conditions
from uvit_pipeline.sampling.grid import labelled_grid
from uvit_pipeline.sampling.requests import check_requested_conditions

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60] or "image"


def _class_indices(classes: list, names: list[str], n_real: int) -> list[int]:
    out = []
    for c in classes:
        if isinstance(c, int):
            if not 0 <= c < n_real:
                raise RequestError(f"generate.classes: {c} is not a class index in [0, {n_real})")
            out.append(c)
        elif c in names:
            out.append(names.index(c))
        else:
            raise RequestError(f"generate.classes: unknown class {c!r}; known: {names}")
    return out


def _text_conditions(info, device: str, text_encoder: str | None, prompts: list[str]):
    """Prompts encoded with the encoder the model was trained with (its identity is checked)."""
    # transformers takes seconds to import: only text models need it
    from uvit_pipeline.encoders.text import load_text_encoder, text_encoder_identity

    if text_encoder is None:
        raise ValueError("a text-to-image checkpoint needs the catalog entry `text_encoder`")
    encoder = load_text_encoder(text_encoder, device=device)
    tokens = info.model.num_clip_token
    identity = text_encoder_identity(encoder, tokens)
    check_text_identity(info.text_encoder, identity, f"text_encoder {text_encoder}")
    return encode_prompt_conditions(encoder, prompts, max_length=tokens)


def generate_images(
    uvit_checkpoint: str,
    image_features: str | None,
    autoencoder: str | None,
    decoder: str | None,
    text_encoder: str | None,
    prompt_file: list[str] | None,
    generate: dict,
    launcher: dict,
    paths: dict,
) -> tuple[str, Image.Image]:
    """`generate.n_per_condition` images per prompt (`generate.prompts` or the prompt file), per class
    (`generate.classes`: indices or names), or of an unconditional model; PNGs named by condition and
    index, plus a grid with each row's prompt or class written under it. The images are sampled in
    chunks of `generate.batch_size` over every process of the `launcher` launch (the same images
    for any number of processes)."""
    requested = list(prompt_file or []) + list(generate["prompts"])
    info = read_checkpoint_info(uvit_checkpoint)
    check_requested_conditions(info, requested, generate["classes"])
    k, labels, contexts = generate["n_per_condition"], None, None
    if info.is_text:
        rows = requested
        if not rows:
            raise RequestError(
                "a text-to-image checkpoint needs prompts: set generate.prompts or --params "
                "prompt_file=<a text file, one prompt per line>"
            )
        cond = _text_conditions(info, generate["device"], text_encoder, rows)
        contexts = {
            "contexts": np.repeat(cond.contexts, k, axis=0).astype(np.float32),
            "null_context": np.asarray(cond.null_context, np.float32),
        }
    elif info.num_real_classes:
        n_real = info.num_real_classes
        names = class_names(image_features, n_real)
        wanted = list(generate["classes"]) or list(range(min(n_real, 10)))
        indices = _class_indices(wanted, names, n_real)
        labels = [i for i in indices for _ in range(k)]
        rows = [names[i] for i in indices]
    else:
        if generate["classes"] or generate["prompts"]:
            raise RequestError(
                "generate.classes/prompts given, but the checkpoint is unconditional"
            )
        rows = ["unconditional"]
    spec = sampling_spec(
        uvit_checkpoint, autoencoder, decoder, generate, n_samples=len(rows) * k,
        batch_size=min(len(rows) * k, generate["batch_size"]), seed=generate["seed"],
        labels=labels, text_features="<prompts>", cfg_param="generate.cfg_scale",
    )  # fmt: skip
    identity = {**spec.to_dict(), "rows": rows, **generate}
    if contexts is not None:  # the encoded prompts: another text encoder gives other samples
        digest = hashlib.sha256(contexts["contexts"].tobytes() + contexts["null_context"].tobytes())
        identity["contexts"] = digest.hexdigest()
    folder = staging_dir(paths["staging"], "generate", identity)
    contexts_file = None
    if contexts is not None:
        contexts_file = folder / "contexts.npz"
        atomic_write(contexts_file, lambda f: np.savez(f, **contexts))
    run_sampling(spec, folder / "chunks", launcher, contexts=contexts_file)
    images, _ = collect(folder / "chunks", spec.n_samples, spec.batch_size)
    out = folder / "images"
    out.mkdir(exist_ok=True)
    for i, img in enumerate(images):
        path = out / f"{i // k:03d}-{_slug(rows[i // k])}-{i % k:02d}.png"
        atomic_write(path, lambda f, a=img: Image.fromarray(a.transpose(1, 2, 0)).save(f, "PNG"))
    log.debug("Wrote %d images to the staging folder %s", len(images), out)
    return str(out), labelled_grid(images, len(rows), rows, scale=generate["grid_scale"])
