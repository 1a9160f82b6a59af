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

from .attention import check_backend

# Every official config states these five (§3.1); an experiment must too, since the defaults below are
# the original's ViT-B/16-on-224-px values, not a sensible diffusion backbone.
GEOMETRY_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")


@dataclass(frozen=True)
class UViTConfig:
    """The arguments of `UViT`; defaults equal the original `libs/uvit.py` (§1).

    `clip_dim`/`num_clip_token` (text models) are None unless given: the original text class defaults
    to 768/77, but every official text config states them. `attention` and `checkpoint_every` are
    ours and do not change the weights.
    """

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    qk_scale: float | None = None
    mlp_time_embed: bool = False
    num_classes: int = -1
    use_checkpoint: bool = False
    conv: bool = True
    skip: bool = True
    clip_dim: int | None = None
    num_clip_token: int | None = None
    attention: str = "sdpa"
    checkpoint_every: int = 1

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
        n = {f: f"{prefix}{f}" for f in self.field_names()}
        for key in ("img_size", "patch_size", "in_chans", "embed_dim", "num_heads"):
            _pos_int(n[key], getattr(self, key))
        _pos_int(n["checkpoint_every"], self.checkpoint_every)
        if not _is_int(self.depth) or self.depth < 0:
            raise ValueError(f"{n['depth']} must be a non-negative integer, got {self.depth!r}")
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
        if not _is_real(self.mlp_ratio) or not self.mlp_ratio > 0:
            raise ValueError(f"{n['mlp_ratio']} must be a number > 0, got {self.mlp_ratio!r}")
        if self.qk_scale is not None and not (_is_real(self.qk_scale) and self.qk_scale > 0):
            raise ValueError(f"{n['qk_scale']} must be None or > 0, got {self.qk_scale!r}")
        for key in ("qkv_bias", "mlp_time_embed", "use_checkpoint", "conv", "skip"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{n[key]} must be true or false, got {getattr(self, key)!r}")
        if not _is_int(self.num_classes):
            raise ValueError(
                f"{n['num_classes']} must be an integer (-1 = no classes), got {self.num_classes!r}"
            )
        if (self.clip_dim is None) != (self.num_clip_token is None):
            raise ValueError(
                f"{n['clip_dim']} and {n['num_clip_token']} must be given together (text model), "
                f"got {self.clip_dim!r} and {self.num_clip_token!r}"
            )
        if self.clip_dim is not None:
            _pos_int(n["clip_dim"], self.clip_dim)
            _pos_int(n["num_clip_token"], self.num_clip_token)
            if self.num_classes > 0:
                raise ValueError(
                    f"{n['num_classes']} > 0 cannot be combined with {n['clip_dim']} (a model is "
                    "class- or text-conditional, §1.2)"
                )
        try:
            check_backend(self.attention)
        except ValueError as e:
            raise ValueError(f"{n['attention']}: {e}") from None
        return self


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _pos_int(name: str, v) -> None:
    if not _is_int(v) or v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


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
