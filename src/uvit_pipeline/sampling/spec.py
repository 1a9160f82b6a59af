"""`SamplingSpec`: everything one sampling job needs, as one frozen value.

Nodes build it (`SamplingSpec.for_checkpoint` derives the class, latent and text facts from the
checkpoint's `CheckpointInfo` and refuses settings the checkpoint cannot honour); `build_sampler` and
`generate_to_dir` take it; `to_json`/`from_json` carry it to the `accelerate launch` child and record
it beside the samples (`spec.json`), where the scoring reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uvit_pipeline._io import atomic_write_json
from uvit_pipeline.models.checkpoint import CheckpointInfo, read_checkpoint_info

WHICH = ("ema", "raw")
# Autocast of the network forward while sampling: auto = fp16 on a GPU (the original sampled under
# accelerate's fp16 autocast), none (fp32) on the CPU.
SAMPLING_PRECISIONS = ("auto", "no", "fp16", "bf16")


@dataclass(frozen=True)
class SamplingSpec:
    """One sampling job (§3.3, §5.3).

    checkpoint: checkpoint directory; which: "ema" or "raw" weights.
    n_samples, batch_size: how many samples, in chunks of this size (chunk k is seeded by (seed, k)).
    sampler, steps, cfg_scale, clip_x0: the solver (diffusion.SAMPLERS) and guidance s in
        (1+s)·ε_c − s·ε_u.
    mixed_precision: autocast of the network forward (SAMPLING_PRECISIONS; outputs back in fp32).
    cfg_batched: guidance's conditional and unconditional passes as one forward of 2B.
    num_real_classes, null_label: the class model's real classes and CFG null class (from the
        checkpoint); labels: explicit labels (a grid), else drawn uniformly or by label_probs.
    device; autoencoder, scale_factor, decode_batch_size, decode_latents: how latents are decoded
        (decode_latents=False returns them undecoded, for throughput checks).
    text_features, text_split: the text store whose captions condition a text model's samples.
    """

    checkpoint: str
    which: str = "ema"
    n_samples: int = 1
    batch_size: int = 1
    sampler: str | None = None
    steps: int | None = None
    cfg_scale: float = 0.0
    clip_x0: bool = False
    seed: int = 0
    num_real_classes: int | None = None
    null_label: int | None = None
    labels: tuple[int, ...] | None = None
    label_probs: tuple[float, ...] | None = None
    device: str = "cpu"
    autoencoder: str | None = None
    scale_factor: float | None = None
    decode_batch_size: int = 50
    text_features: str | None = None
    text_split: str = "val"
    decode_latents: bool = True
    mixed_precision: str = "auto"
    cfg_batched: bool = True

    def __post_init__(self) -> None:
        if self.which not in WHICH:
            raise ValueError(f"which must be one of {list(WHICH)}, got {self.which!r}")
        if self.mixed_precision is False:  # YAML reads an unquoted `no` as False
            object.__setattr__(self, "mixed_precision", "no")
        if self.mixed_precision not in SAMPLING_PRECISIONS:
            raise ValueError(
                f"mixed_precision must be one of {list(SAMPLING_PRECISIONS)}, got "
                f"{self.mixed_precision!r}"
            )
        for name in ("labels", "label_probs"):  # lists from JSON -> tuples: the value is frozen
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def for_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        *,
        autoencoder: str | None,
        text_features: str | None,
        cfg_param: str = "cfg_scale",
        **settings: Any,
    ) -> SamplingSpec:
        """A spec for `checkpoint`: its classes, null label and latent scale come from its
        `CheckpointInfo`; `settings` are the other fields. `cfg_param` names the parameter the
        guidance scale comes from in errors."""
        info = read_checkpoint_info(checkpoint)
        check_settings(info, autoencoder, text_features, settings.get("cfg_scale", 0.0), cfg_param)
        return cls(
            checkpoint=str(Path(checkpoint).resolve()),
            num_real_classes=info.num_real_classes,
            null_label=info.null_label,
            autoencoder=autoencoder if info.is_latent else None,
            scale_factor=info.scale_factor,
            text_features=str(text_features) if info.is_text else None,
            **settings,
        )

    def replace(self, **changes: Any) -> SamplingSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in ("labels", "label_probs"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingSpec:
        """From `to_dict()`'s output; an unknown key raises `ValueError` naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"sampling spec: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the spec atomically to `path`; returns the path."""
        return atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> SamplingSpec:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"sampling spec {path} is unreadable ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"sampling spec {path} holds no JSON object")
        return cls.from_dict(d)


def check_settings(
    info: CheckpointInfo,
    autoencoder: str | None,
    text_features: str | None,
    cfg_scale: float,
    cfg_param: str,
) -> None:
    """Refuse what this checkpoint cannot sample: a text model without a caption source, guidance
    without a null condition, a latent model without the autoencoder that decodes it."""
    if info.is_text and text_features is None:
        raise ValueError(
            "the checkpoint is a text-to-image model: its samples are conditioned on captions from "
            "the catalog entry text_features (run the text_features pipeline first)"
        )
    if cfg_scale > 0 and info.null_label is None and not info.is_text:
        n_real = info.num_real_classes
        what = "an unconditional model" if n_real is None else "a model without a null class"
        raise ValueError(
            f"{cfg_param}: a CFG scale > 0 ({cfg_scale}) needs a model trained with "
            f"label dropping (training.p_uncond > 0), the checkpoint is {what}; use scale 0"
        )
    if info.is_latent and autoencoder is None:
        raise ValueError(
            "the checkpoint is a latent model: the catalog entry `autoencoder` (or `decoder`) "
            "must name the autoencoder that decodes its samples"
        )
