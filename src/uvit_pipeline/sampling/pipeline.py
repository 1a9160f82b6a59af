"""`UViTGenerator`: a trained or imported U-ViT as one callable that returns PIL images.

    gen = UViTGenerator.from_pretrained("data/06_models/demo_t2i/uvit_checkpoint/<version>/uvit_checkpoint")
    images = gen(["a red circle on a dark background"], steps=20, guidance=3, seed=0)

It wraps `build_sampler` (the network, schedule and latent decoder of a checkpoint) and
`generate_samples`; conditions are prompts for a text model (encoded with the text encoder the model
was trained with, its identity checked), class indices or names for a class model, and nothing for an
unconditional one. `save_pretrained(folder)` writes a self-contained bundle: the checkpoint, the
autoencoder of a latent model, the text encoder of a text model and `generator.json` (class names and
default sampler settings); `from_pretrained` reads a bundle or a bare checkpoint directory.
`from_catalog(catalog)` builds one from a Kedro catalog (anything with `load(name)`; notebooks).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from uvit_pipeline._io import atomic_write_json
from uvit_pipeline.diffusion import SAMPLERS

from .conditions import check_text_identity, encode_prompt_conditions
from .generate import SamplerSetup, build_sampler
from .requests import accepted_conditions
from .spec import SamplingSpec

BUNDLE_FILE = "generator.json"
DEFAULTS = {"sampler": "dpm_solver_pp", "steps": 50, "guidance": 0.0}

__all__ = ["BUNDLE_FILE", "UViTGenerator", "class_names", "resolve_device"]


def class_names(image_features: str | os.PathLike | None, n_real: int) -> list[str]:
    """Row labels of a class model: a feature store's class names where it has them, else indices."""
    if image_features is not None:
        manifest = Path(image_features) / "manifest.parquet"
        if manifest.is_file():
            import pandas as pd

            m = pd.read_parquet(manifest, columns=["label", "class_name"])
            names = m.drop_duplicates("label").set_index("label")["class_name"].to_dict()
            return [str(names.get(i, i)) for i in range(n_real)]
    return [str(i) for i in range(n_real)]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`auto` (or None): CUDA when present, else CPU; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class UViTGenerator:
    """A checkpoint ready to sample, called with conditions; returns one PIL image per sample.

    kind: "text" (prompts), "class" (class indices or names) or "none" (unconditional).
    class_names: the names class models accept besides indices (indices as strings when unknown).
    defaults: sampler, steps and guidance used when a call does not give them.
    """

    def __init__(
        self,
        setup: SamplerSetup,
        *,
        autoencoder: str | None = None,
        text_encoder: Any = None,
        class_names: Sequence[str] | None = None,
        defaults: dict | None = None,
    ) -> None:
        self.setup = setup
        self.autoencoder = autoencoder
        self.text_encoder = text_encoder  # an encoders.text.TextEncoder (text models only)
        self.kind = accepted_conditions(setup.info)
        n = setup.info.num_real_classes or 0
        names = [str(c) for c in class_names] if class_names is not None else []
        if names and len(names) != n:
            raise ValueError(f"class_names: {len(names)} names for a model with {n} classes")
        self.class_names = names or [str(i) for i in range(n)]
        self.defaults = {**DEFAULTS, **{k: v for k, v in (defaults or {}).items() if v is not None}}
        unknown = sorted(set(self.defaults) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"defaults: unknown keys {unknown}; known: {sorted(DEFAULTS)}")

    # --- loading ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        autoencoder: str | None = None,
        text_encoder: str | None = None,
        class_names: Sequence[str] | None = None,
        device: str | torch.device | None = "auto",
        use_ema: bool = True,
        defaults: dict | None = None,
    ) -> UViTGenerator:
        """Load a bundle written by `save_pretrained`, or a checkpoint directory (a training export,
        an import, or a `<step>.ckpt` training state).

        A latent model needs `autoencoder` (a diffusers folder, a Hugging Face id or `id:subfolder`;
        a bundle carries its own). A text model loads the text encoder recorded in its checkpoint
        unless `text_encoder` names another copy of it. Arguments given here win over the bundle's.
        """
        root = Path(path)
        bundle: dict = {}
        checkpoint = root
        if (root / BUNDLE_FILE).is_file():
            try:
                bundle = json.loads((root / BUNDLE_FILE).read_text(encoding="utf-8"))
            except ValueError as e:
                raise ValueError(f"{root / BUNDLE_FILE} is not valid JSON ({e})") from None
            checkpoint = root / bundle.get("checkpoint", "uvit")
            for key, value in (("autoencoder", autoencoder), ("text_encoder", text_encoder)):
                if value is None and bundle.get(key):
                    value = str(root / bundle[key])
                if key == "autoencoder":
                    autoencoder = value
                else:
                    text_encoder = value
            class_names = class_names if class_names is not None else bundle.get("class_names")
            defaults = {**(bundle.get("defaults") or {}), **(defaults or {})}
        elif not root.is_dir():
            raise FileNotFoundError(
                f"{root} does not exist: pass a checkpoint directory (a version folder of "
                "data/06_models/<experiment>/uvit_checkpoint/) or a folder written by "
                "UViTGenerator.save_pretrained"
            )
        spec = SamplingSpec.for_checkpoint(
            checkpoint,
            autoencoder=None if autoencoder is None else str(autoencoder),
            text_features="<prompts>",  # a text model is conditioned on prompts, not on a store
            cfg_param="guidance",
            which="ema" if use_ema else "raw",
            device=str(resolve_device(device)),
        )
        setup = build_sampler(spec)
        encoder = None
        if setup.is_text:
            encoder = _load_text_encoder(setup, text_encoder)
        return cls(
            setup,
            autoencoder=spec.autoencoder,
            text_encoder=encoder,
            class_names=class_names,
            defaults=defaults,
        )

    @classmethod
    def from_catalog(
        cls, catalog: Any, *, params: dict | None = None, **kwargs: Any
    ) -> UViTGenerator:
        """From a Kedro catalog (anything with `load(name)`): the newest `uvit_checkpoint`, the
        `decoder` or `autoencoder`, the `text_encoder`, class names from `image_features`, and the
        sampler defaults of the `generate` parameters when `params` (or the catalog's
        `params:generate`) gives them."""

        def load(name: str):
            try:
                return catalog.load(name)
            except Exception:  # an entry this environment lacks, or no version saved yet
                return None

        checkpoint = load("uvit_checkpoint")
        if checkpoint is None:
            raise FileNotFoundError(
                "the catalog has no uvit_checkpoint version yet: train one "
                "(kedro run --pipelines train_uvit) or import one (--pipelines import_pretrained)"
            )
        section = params if params is not None else load("params:generate") or {}
        kwargs.setdefault("autoencoder", load("decoder") or load("autoencoder"))
        kwargs.setdefault("text_encoder", load("text_encoder"))
        kwargs.setdefault(
            "defaults",
            {
                "sampler": section.get("sampler"),
                "steps": section.get("steps"),
                "guidance": section.get("cfg_scale"),
            },
        )
        gen = cls.from_pretrained(checkpoint, **kwargs)
        if gen.kind == "class" and "class_names" not in kwargs:
            gen.class_names = class_names(load("image_features"), len(gen.class_names))
        return gen

    # --- sampling -----------------------------------------------------------------------------

    @property
    def info(self):
        """The checkpoint's `CheckpointInfo`."""
        return self.setup.info

    @property
    def device(self) -> torch.device:
        return self.setup.device

    def labels_of(self, classes: Sequence[int | str]) -> list[int]:
        """Class indices of `classes` (indices, names, or indices written as strings)."""
        out = []
        n = len(self.class_names)
        for c in classes:
            if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
                index = int(c)
            elif isinstance(c, str) and c in self.class_names:
                index = self.class_names.index(c)
            elif isinstance(c, str) and c.strip().lstrip("-").isdigit():
                index = int(c)
            else:
                raise ValueError(f"unknown class {c!r}; known: {self.class_names}")
            if not 0 <= index < n:
                raise ValueError(f"class {index} is not a class index in [0, {n})")
            out.append(index)
        return out

    def __call__(
        self, conditions: Sequence[int | str] | str | None = None, **options: Any
    ) -> list[Image.Image]:
        """Images for `conditions`: prompts (text model), class indices or names (class model), or
        None for an unconditional model, as PIL images; `options` as `generate` (steps, guidance,
        seed, sampler, n_per_condition, batch_size)."""
        return [Image.fromarray(a.transpose(1, 2, 0)) for a in self.generate(conditions, **options)]

    def generate(
        self,
        conditions: Sequence[int | str] | str | None = None,
        *,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        sampler: str | None = None,
        n_per_condition: int = 1,
        batch_size: int = 16,
    ) -> np.ndarray:
        """uint8 images (n, 3, H, W) for `conditions`, `n_per_condition` each, in order. `guidance`
        is the CFG scale s in (1+s)·ε_c − s·ε_u; unset options take `defaults`. The same seed gives
        the same images."""
        if isinstance(conditions, str):
            conditions = [conditions]
        conditions = list(conditions or [])
        sampler = sampler or self.defaults["sampler"]
        steps = int(steps if steps is not None else self.defaults["steps"])
        guidance = float(guidance if guidance is not None else self.defaults["guidance"])
        k = int(n_per_condition)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: unknown {sampler!r}; known: {sorted(SAMPLERS)}")
        if steps < 1 or k < 1 or batch_size < 1:
            raise ValueError("steps, n_per_condition and batch_size must be positive")
        if guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        kw: dict = {}
        if self.kind == "text":
            if not conditions or not all(isinstance(p, str) for p in conditions):
                raise ValueError("this is a text-to-image model: give a list of prompts")
            tokens = self.info.model.num_clip_token
            cond = encode_prompt_conditions(self.text_encoder, conditions, max_length=tokens)
            kw = {
                "contexts": np.repeat(cond.contexts, k, axis=0),
                "null_context": cond.null_context,
            }
        elif self.kind == "class":
            indices = self.labels_of(conditions or range(min(len(self.class_names), 10)))
            if guidance > 0 and self.info.null_label is None:
                raise ValueError(
                    f"guidance {guidance} needs a model trained with label dropping; this one "
                    "was not: use guidance=0"
                )
            kw = {
                "labels": torch.tensor(indices).repeat_interleave(k),
                "null_label": self.info.null_label,
            }
            conditions = indices
        else:
            if conditions:
                raise ValueError("this is an unconditional model: call it without conditions")
            if guidance > 0:
                raise ValueError("an unconditional model cannot be guided: use guidance=0")
            conditions = [None]
        n = len(conditions) * k
        return self.setup.generate(
            n=n,
            batch_size=min(n, int(batch_size)),
            sampler=sampler,
            steps=steps,
            cfg_scale=guidance,
            seed=int(seed),
            progress=False,
            **kw,
        )

    # --- sharing ------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write a self-contained bundle into the new folder `folder`: `uvit/` (the checkpoint),
        `autoencoder/` (latent models), `text_encoder/` (text models) and `generator.json`."""
        out = Path(folder)
        if out.exists():
            raise FileExistsError(f"{out} exists: save_pretrained writes a new folder")
        tmp = out.with_name(f".{out.name}.partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        src = Path(self.info.path)
        shutil.copytree(src, tmp / "uvit", ignore=shutil.ignore_patterns("*.tmp", ".*"))
        meta: dict = {
            "format": 1,
            "checkpoint": "uvit",
            "kind": self.kind,
            "class_names": self.class_names if self.kind == "class" else None,
            "defaults": self.defaults,
            "autoencoder": None,
            "text_encoder": None,
        }
        if self.setup.decode is not None and self.autoencoder:
            _copy_autoencoder(self.autoencoder, tmp / "autoencoder")
            meta["autoencoder"] = "autoencoder"
        if self.text_encoder is not None:
            self.text_encoder.tokenizer.save_pretrained(tmp / "text_encoder")
            self.text_encoder.model.save_pretrained(tmp / "text_encoder")
            meta["text_encoder"] = "text_encoder"
        atomic_write_json(tmp / BUNDLE_FILE, meta)
        tmp.rename(out)
        return out


def _load_text_encoder(setup: SamplerSetup, text_encoder: str | None):
    """The encoder the model was trained with (or `text_encoder`, checked to be the same)."""
    from uvit_pipeline.encoders.text import load_text_encoder, text_encoder_identity

    recorded = setup.text_encoder or {}
    source = text_encoder or recorded.get("name")
    if not source:
        raise ValueError(
            f"checkpoint {setup.info.path} records no text encoder: pass text_encoder="
            "<a local folder or Hugging Face id of the encoder it was trained with>"
        )
    encoder = load_text_encoder(source, device=setup.device)
    identity = text_encoder_identity(encoder, setup.info.model.num_clip_token)
    check_text_identity(setup.text_encoder, identity, f"text_encoder {source}")
    return encoder


def _copy_autoencoder(spec: str, target: Path) -> None:
    """A local diffusers folder is copied; a hub id (`id` or `id:subfolder`) is saved as one."""
    if Path(spec).is_dir():
        shutil.copytree(spec, target)
        return
    from uvit_pipeline.encoders.autoencoder import load_autoencoder_spec

    load_autoencoder_spec(spec).save_pretrained(target)
