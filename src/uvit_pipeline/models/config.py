"""UViT constructor arguments in one validated type, and the official configuration values.

`UViTConfig` holds the constructor fields with the original's defaults (docs/reference.md §1) and every
check of the model arguments; `UViT`, `TrainConfig`, the presets and the state-dict tools all use it.
The values of the official config files live in `official_configs.json` beside this module (§3) and
are read only through `load_official_configs()` / `official_config(name)`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..fields import Check, boolean, check_fields, integer, number, optional, setting
from .attention import ATTENTION_BACKENDS, check_backend

# Every official config states these five (§3.1); an experiment must too, since the defaults below are
# the original's ViT-B/16-on-224-px values, not a sensible diffusion backbone.
GEOMETRY_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")


class _Backend(Check):
    def __call__(self, name, value):
        try:
            check_backend(value)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None


_BACKEND = _Backend(lambda: f"one of {list(ATTENTION_BACKENDS)}", lambda v: v in ATTENTION_BACKENDS)
_QK_SCALE = Check("None or > 0", lambda v: v is None or number(0, low_open=True).ok(v))


@dataclass(frozen=True)
class UViTConfig:
    """The arguments of `UViT`; defaults equal the original `libs/uvit.py` (§1).

    `clip_dim`/`num_clip_token` (text models) are None unless given: the original text class defaults
    to 768/77, but every official text config states them. `attention` and `checkpoint_every` are
    ours and do not change the weights.
    """

    img_size: int = setting(224, integer(1), "input side in pixels (latent models: latent side)")
    patch_size: int = setting(16, integer(1), "patch side; divides img_size (§1.1)")
    in_chans: int = setting(3, integer(1), "input channels: 3 for pixels, 4 for SD latents")
    embed_dim: int = setting(768, integer(1), "token width")
    depth: int = setting(12, integer(0), "transformer blocks: in-blocks + mid-block + out-blocks")
    num_heads: int = setting(12, integer(1), "attention heads; divides embed_dim (§1.3)")
    mlp_ratio: float = setting(4.0, number(0, low_open=True), "MLP hidden width / embed_dim")
    qkv_bias: bool = setting(False, boolean, "bias in the qkv projection")
    qk_scale: float | None = setting(None, _QK_SCALE, "attention scale; null = head_dim ** -0.5")
    mlp_time_embed: bool = setting(False, boolean, "an MLP on the time embedding (§1.2)")
    num_classes: int = setting(
        -1,
        Check("an integer (-1 = no classes)", integer().ok),
        "label embeddings; -1 = unconditional, K + 1 with a null class for guidance (§1.1)",
    )
    use_checkpoint: bool = setting(False, boolean, "gradient checkpointing (training option)")
    conv: bool = setting(True, boolean, "the final 3x3 conv after unpatchify (§1.4)")
    skip: bool = setting(True, boolean, "long skip connections (§1.3)")
    clip_dim: int | None = setting(
        None, optional(integer(1)), "text models: width of the text features (with num_clip_token)"
    )
    num_clip_token: int | None = setting(
        None, optional(integer(1)), "text models: tokens per caption (with clip_dim)"
    )
    attention: str = setting("sdpa", _BACKEND, "attention kernel (training option)")
    checkpoint_every: int = setting(1, integer(1), "checkpoint every n-th block (training option)")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any], prefix: str = "model.") -> UViTConfig:
        """Build from a mapping; an unknown key raises `ValueError` naming it (not validated yet)."""
        known = cls.field_names()
        for key in kwargs:
            if key not in known:
                raise ValueError(f"{prefix}{key} is not a UViT argument; known: {sorted(known)}")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, prefix: str = "model.") -> UViTConfig:
        """Raise `ValueError` naming the first bad argument as `{prefix}{name}`; returns self."""
        check_fields(self, prefix)
        n = {f: f"{prefix}{f}" for f in self.field_names()}
        if self.img_size % self.patch_size:
            raise ValueError(
                f"{n['patch_size']} ({self.patch_size}) must divide {n['img_size']} "
                f"({self.img_size}) (§1.1)"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"{n['num_heads']} ({self.num_heads}) must divide {n['embed_dim']} "
                f"({self.embed_dim}) (§1.3)"
            )
        if (self.clip_dim is None) != (self.num_clip_token is None):
            raise ValueError(
                f"{n['clip_dim']} and {n['num_clip_token']} must be given together (text model), "
                f"got {self.clip_dim!r} and {self.num_clip_token!r}"
            )
        if self.clip_dim is not None and self.num_classes > 0:
            raise ValueError(
                f"{n['num_classes']} > 0 cannot be combined with {n['clip_dim']} (a model is "
                "class- or text-conditional, §1.2)"
            )
        return self


# ---- official configuration values (§3, §9.1) -------------------------------------------------------

OFFICIAL_CONFIGS_FILE = "official_configs.json"


@functools.cache
def _document() -> dict[str, Any]:
    text = resources.files(__package__).joinpath(OFFICIAL_CONFIGS_FILE).read_text("utf-8")
    return json.loads(text)


def load_official_configs() -> dict[str, dict[str, Any]]:
    """Config name -> its flat values (`nnet.depth`, `optimizer.betas`, ... plus the facts listed
    under `extra_keys` in the file). A fresh copy each call (the parsed file is cached)."""
    return copy.deepcopy(_document()["configs"])


def official_config(name: str) -> dict[str, Any]:
    """The flat values of one official config; unknown names raise `ValueError` listing the known."""
    configs = _document()["configs"]
    if name not in configs:
        raise ValueError(f"unknown official config {name!r}; known: {sorted(configs)}")
    return copy.deepcopy(configs[name])


def official_script_defaults() -> dict[str, Any]:
    """Values the official scripts use where a config file is silent (e.g. autoencoder.scale_factor)."""
    return copy.deepcopy(_document()["script_defaults"])


def official_nnet_kwargs(name: str) -> dict[str, Any]:
    """The config's `nnet.*` values without `nnet.name`: exactly what the original passes to its UViT."""
    cfg = official_config(name)
    return {
        k.removeprefix("nnet."): v
        for k, v in cfg.items()
        if k.startswith("nnet.") and k != "nnet.name"
    }
