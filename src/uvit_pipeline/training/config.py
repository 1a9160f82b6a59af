"""Typed, validated training configuration (docs/reference.md §3.2, §4.4).

Everything the launched child process needs travels in one JSON file written from `TrainConfig.to_dict()`.
`validate()` runs before any compute and raises `ValueError` naming the dotted parameter
(`model.*` for the network, `training.*` for everything else).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..data.torch_datasets import FEATURE_KINDS
from ..diffusion.schedules import SCHEDULES
from ..models import UViTConfig, resolve_kwargs
from ..models.attention import ATTENTION_BACKENDS
from ..models.checkpoint import label_roles
from ..models.config import GEOMETRY_KEYS
from ..models.presets import preset_kwargs

MIXED_PRECISION = ("no", "fp16", "bf16")
# Kwargs the loop sets from training options; they are not `model.*` parameters.
_LOOP_MODEL_KEYS = ("use_checkpoint", "attention", "checkpoint_every")


@dataclass
class DataConfig:
    """Where the training features live and how they are turned into network inputs."""

    path: str = ""
    kind: str = "pixels"  # "pixels" (uint8 x) or "latent_moments" (fp16 moments, §4.5)
    random_flip: bool = True
    expected_meta: dict = field(default_factory=dict)  # checked with FeatureStore.verify_meta
    scale_factor: float = 0.18215  # latent stores only (§4.5; 0.23010 for MS-COCO)
    num_workers: int = 0
    # Text-to-image only: the text-context store of the same images (§7.3) and, optionally, the
    # encoder identity (keys of its meta "encoder", e.g. name/sha256) it must have been made with.
    text_path: str = ""
    expected_text_encoder: dict = field(default_factory=dict)
    # FeatureStore.content_id the run expects ("" = any); states record the store's and a run
    # never resumes a state trained on other content.
    content_id: str = ""


@dataclass
class TrainConfig:
    """All knobs of one training run; defaults follow the official configs (§3.2, §4.4)."""

    model: dict = field(default_factory=lambda: {"preset": "U-ViT-demo"})
    schedule: str = "vp_continuous"
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = 128  # GLOBAL batch, split evenly over processes
    lr: float = 2e-4
    betas: tuple[float, float] = (0.99, 0.999)
    weight_decay: float = 0.03  # on ALL parameters (§4.4)
    eps: float = 1e-8
    warmup_steps: int = 2500
    n_steps: int = 500_000
    ema_rate: float = 0.9999
    p_uncond: float = 0.0  # CFG label dropping (0.1 / 0.15 for latent ImageNet, §3.2)
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    checkpoint_every: int = 1
    compile: bool = False
    fused_adamw: bool = False
    attention: str = "sdpa"
    log_interval: int = 10
    save_interval: int = 50_000
    keep_last: int = 2
    seed: int = 1234
    run_dir: str = ""
    resume: bool = True
    cpu: bool = False
    peak_tflops: float | None = None  # per-device peak for MFU; None = look up the GPU name

    def __post_init__(self) -> None:
        self.mixed_precision = mixed_precision_value(self.mixed_precision)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (YAML/JSON); unknown keys raise `ValueError` naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"training config must be a mapping, got {type(d).__name__}")
        d = dict(d)
        _reject_unknown(d, cls, "training")
        data = d.pop("data", {}) or {}
        if isinstance(data, DataConfig):
            data = dataclasses.asdict(data)
        if not isinstance(data, dict):
            raise ValueError(f"training.data must be a mapping, got {type(data).__name__}")
        _reject_unknown(data, DataConfig, "training.data")
        if "betas" in d and isinstance(d["betas"], list):
            d["betas"] = tuple(d["betas"])
        if "model" in d and d["model"] is not None:
            d["model"] = dict(d["model"])
        return cls(data=DataConfig(**data), **d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `from_dict(to_dict())` round-trips."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    def model_kwargs(self) -> dict[str, Any]:
        """Full UViT constructor kwargs: preset + overrides + the loop's attention/checkpoint options."""
        overrides = {k: v for k, v in self.model.items() if k != "preset"}
        kwargs = resolve_kwargs(self.model.get("preset"), **overrides)
        # §1.6: gradient checkpointing is a training option, not an architecture choice.
        kwargs.update(
            use_checkpoint=self.gradient_checkpointing,
            attention=self.attention,
            checkpoint_every=self.checkpoint_every,
        )
        return kwargs

    def null_label(self) -> int | None:
        """Index of the CFG null class when labels are dropped (`models.checkpoint.label_roles`)."""
        kw = self.model_kwargs()
        return label_roles(kw.get("num_classes"), kw.get("clip_dim"), self.p_uncond)[1]

    def validate(self, num_processes: int = 1) -> TrainConfig:
        """Raise `ValueError` naming the dotted key of the first bad value; returns self."""
        _pos_int("training.batch_size", self.batch_size)
        _pos_int("training.n_steps", self.n_steps)
        _nonneg_int("training.warmup_steps", self.warmup_steps)
        _pos_int("training.log_interval", self.log_interval)
        _pos_int("training.save_interval", self.save_interval)
        _pos_int("training.keep_last", self.keep_last)
        _pos_int("training.checkpoint_every", self.checkpoint_every)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"training.seed must be an integer, got {self.seed!r}")
        _pos_float("training.lr", self.lr)
        _pos_float("training.eps", self.eps)
        if not _is_real(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"training.weight_decay must be >= 0, got {self.weight_decay!r}")
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else ()
        if len(betas) != 2 or not all(_is_real(b) and 0 <= b < 1 for b in betas):
            raise ValueError(f"training.betas must be two numbers in [0, 1), got {self.betas!r}")
        if not _is_real(self.ema_rate) or not 0 <= self.ema_rate <= 1:
            raise ValueError(f"training.ema_rate must be in [0, 1], got {self.ema_rate!r}")
        if not _is_real(self.p_uncond) or not 0 <= self.p_uncond < 1:
            raise ValueError(f"training.p_uncond must be in [0, 1), got {self.p_uncond!r}")
        _choice("training.schedule", self.schedule, SCHEDULES)
        check_mixed_precision("training.mixed_precision", self.mixed_precision)
        _choice("training.attention", self.attention, ATTENTION_BACKENDS)
        if self.peak_tflops is not None:
            _pos_float("training.peak_tflops", self.peak_tflops)
        if not isinstance(self.run_dir, str) or not self.run_dir:
            raise ValueError(f"training.run_dir must be a non-empty path, got {self.run_dir!r}")
        _pos_int("launcher.num_processes", num_processes)
        if self.batch_size % num_processes:
            raise ValueError(
                f"training.batch_size ({self.batch_size}) must be divisible by the number of "
                f"processes ({num_processes})"
            )
        self._validate_data()
        self._validate_model()
        return self

    def _validate_data(self) -> None:
        d = self.data
        if not isinstance(d.path, str) or not d.path:
            raise ValueError(f"training.data.path must be a non-empty path, got {d.path!r}")
        _choice("training.data.kind", d.kind, FEATURE_KINDS)
        _pos_float("training.data.scale_factor", d.scale_factor)
        _nonneg_int("training.data.num_workers", d.num_workers)
        if not isinstance(d.content_id, str):
            raise ValueError(
                f"training.data.content_id must be a string (a store's content_id), got "
                f"{d.content_id!r}"
            )
        if not isinstance(d.expected_meta, dict):
            raise ValueError(
                f"training.data.expected_meta must be a mapping, got {d.expected_meta!r}"
            )
        if not isinstance(d.text_path, str):
            raise ValueError(f"training.data.text_path must be a path string, got {d.text_path!r}")
        if not isinstance(d.expected_text_encoder, dict):
            raise ValueError(
                "training.data.expected_text_encoder must be a mapping, got "
                f"{d.expected_text_encoder!r}"
            )

    def _validate_model(self) -> None:
        if not isinstance(self.model, dict):
            raise ValueError(f"model must be a mapping, got {type(self.model).__name__}")
        preset = self.model.get("preset")
        overrides = {k: v for k, v in self.model.items() if k != "preset"}
        for key in overrides:
            if key in _LOOP_MODEL_KEYS:
                raise ValueError(
                    f"model.{key} is set by the training options "
                    "(training.gradient_checkpointing / attention / checkpoint_every)"
                )
        UViTConfig.from_kwargs(overrides)  # unknown keys -> "model.<key> is not a UViT argument"
        try:
            stated = {**preset_kwargs(preset), **overrides}
        except ValueError as e:
            raise ValueError(f"model.preset: {e}") from None
        for key in GEOMETRY_KEYS:
            if key not in stated:
                raise ValueError(f"model.{key} is required (not set by preset {preset!r})")
        kwargs = self.model_kwargs()
        UViTConfig(**kwargs).validate(prefix="model.")
        num_classes = kwargs.get("num_classes", -1)
        is_text = kwargs.get("clip_dim") is not None
        if is_text and not self.data.text_path:
            raise ValueError(
                f"model.clip_dim={kwargs['clip_dim']} makes a text-conditional model: set "
                "training.data.text_path to the text-context store of the training images"
            )
        if self.data.text_path and not is_text:
            raise ValueError(
                f"training.data.text_path is set ({self.data.text_path!r}) but the model is not "
                "text-conditional (set model.clip_dim and model.num_clip_token)"
            )
        if (
            self.p_uncond > 0
            and not is_text
            and not (isinstance(num_classes, int) and num_classes > 1)
        ):
            raise ValueError(
                "training.p_uncond > 0 needs a text model or a class-conditional model with a "
                f"null class (model.num_classes = K + 1), got model.num_classes={num_classes!r}"
            )
        if self.data.kind == "latent_moments" and kwargs["in_chans"] != 4:
            raise ValueError(
                f"model.in_chans must be 4 for latent_moments stores (§4.5), got {kwargs['in_chans']}"
            )


def mixed_precision_value(v):
    """YAML reads an unquoted `no` as False: that means "no" mixed precision."""
    return "no" if v is False else v


def check_mixed_precision(name: str, v) -> None:
    if isinstance(v, bool):  # True: an unquoted yes/on/true, which names no precision
        raise ValueError(
            f"{name} must be one of {list(MIXED_PRECISION)}, got {v!r} (YAML reads an unquoted "
            "yes/true/on as a boolean: write fp16 or bf16)"
        )
    _choice(name, v, MIXED_PRECISION)


def _reject_unknown(d: dict, cls, prefix: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in d:
        if key not in known:
            raise ValueError(f"{prefix}.{key} is not a known parameter; known: {sorted(known)}")


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _pos_int(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _nonneg_int(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {v!r}")


def _pos_float(name: str, v) -> None:
    if not _is_real(v) or not v > 0:
        raise ValueError(f"{name} must be a positive number, got {v!r}")


def _choice(name: str, v, options: tuple[str, ...]) -> None:
    if v not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {v!r}")
