"""Typed, validated training configuration (docs/reference.md §3.2, §4.4).

Each field is declared once with its check and help text (`fields.setting`): the `training` and
`model` parameter sections, their validation and docs/parameters.md are derived from `TrainConfig`,
`DataConfig` and `UViTConfig`. The field defaults are conf/base's values (tests/training/
test_config.py keeps them equal); the paper experiments' values are conf/base plus an environment.
Everything the launched child process needs travels in one JSON file written from
`TrainConfig.to_dict()`. `validate()` raises `ValueError` naming the dotted parameter (`model.*`
for the network, `training.*` for everything else).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..data.torch_datasets import FEATURE_KINDS
from ..diffusion.schedules import SCHEDULES
from ..fields import (
    Check,
    boolean,
    check_fields,
    derived,
    integer,
    mapping,
    number,
    one_of,
    optional,
    pair,
    parameters,
    setting,
)
from ..models import UViTConfig, resolve_kwargs
from ..models.attention import ATTENTION_BACKENDS
from ..models.checkpoint import label_roles
from ..models.config import GEOMETRY_KEYS
from ..models.presets import OFFICIAL_CONFIGS, PRESETS, preset_kwargs

MIXED_PRECISION = ("no", "fp16", "bf16")
# UViT arguments the loop sets from training options; they are not `model.*` parameters.
_LOOP_MODEL_KEYS = ("use_checkpoint", "attention", "checkpoint_every")


class _Precision(Check):
    """no | fp16 | bf16; YAML and `--params` read the documented `no` as false, which means "no"."""

    def __init__(self):
        super().__init__(
            f"one of {list(MIXED_PRECISION)}", lambda v: v is False or v in MIXED_PRECISION
        )

    def __call__(self, name, value):
        if value is True:  # an unquoted yes/on/true names no precision
            raise ValueError(
                f"{name} must be {self.what}, got True (YAML reads an unquoted yes/true/on as a "
                "boolean: write fp16 or bf16)"
            )
        super().__call__(name, value)


positive = number(0, low_open=True)
path = Check("a non-empty path", lambda v: isinstance(v, str) and bool(v))


@dataclass
class DataConfig:
    """Where the training features live and how they become network inputs. `random_flip` and
    `num_workers` are parameters (`training.data.*`); the training pipeline fills in the rest from
    the feature stores and the `features` section."""

    path: str = derived("", path, "feature store directory (`data.FeatureStore`)")
    kind: str = derived(
        "pixels",
        one_of(FEATURE_KINDS),
        "pixels (uint8 x) or latent_moments (fp16 moments, §4.5); must equal the store's meta.kind",
    )
    random_flip: bool = setting(
        True,
        boolean,
        "random horizontal flips at training time (pixel stores), or a random one of the stored "
        "image / mirror-image moments (latent stores), with p = 0.5 (§7.2)",
    )
    expected_meta: dict = derived(
        {}, mapping, "checked against the store (FeatureStore.verify_meta)"
    )
    scale_factor: float = derived(0.18215, positive, "latent scale (§4.5; 0.23010 for MS-COCO)")
    num_workers: int = setting(8, integer(0), "DataLoader worker processes per training process")
    verify: str = setting(
        "quick",
        one_of(("quick", "full")),
        "store content check at every start and resume: quick (sizes, manifest sha256, sha256 of "
        "3 sampled blocks per shard file) or full (sha256 of every file; also on demand with "
        "`python -m uvit_pipeline.data.verify <store>`)",
    )
    # Text-to-image only: the text-context store of the same images (§7.3) and, optionally, the
    # encoder identity (keys of its meta "encoder", e.g. name/sha256) it must have been made with.
    text_path: str = derived(
        "", Check("a path string", lambda v: isinstance(v, str)), "text-context store (§7.3)"
    )
    expected_text_encoder: dict = derived({}, mapping, "identity the text store must carry")
    # FeatureStore.content_id the run expects ("" = any); states record the store's and a run
    # never resumes a state trained on other content.
    content_id: str = derived(
        "",
        Check("a string (a store's content_id)", lambda v: isinstance(v, str)),
        "the store's content_id",
    )


@dataclass
class TrainConfig:
    """All knobs of one training run (§3.2, §4.4). `model` is the `model` parameter section;
    `data`, `run_dir` and `cpu` are filled in by the training pipeline."""

    model: dict = derived({"preset": None}, None, "the `model` section (checked by validate)")
    schedule: str = setting(
        "vp_continuous",
        one_of(SCHEDULES),
        "noise schedule: vp_continuous (§4.1, the network sees 999·t) or discrete (Stable "
        "Diffusion betas, §4.2, the network sees n)",
    )
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    batch_size: int = setting(
        1024, integer(1), "global batch, split evenly over launcher.num_processes"
    )
    lr: float = setting(0.0002, positive, "AdamW learning rate after warmup")
    betas: tuple[float, float] = setting(
        (0.99, 0.99), pair(number(0, 1), "two numbers in [0, 1)"), "AdamW [beta1, beta2]"
    )
    weight_decay: float = setting(0.03, number(0), "AdamW weight decay, on all parameters (§4.4)")
    eps: float = setting(1e-8, positive, "AdamW epsilon")
    warmup_steps: int = setting(
        5000, integer(0), "linear warmup from lr 0, then constant (§4.4); 0 = none"
    )
    n_steps: int = setting(
        500_000,
        integer(1),
        "optimizer steps; raising it continues the same run from its newest state",
        identity=False,
    )
    ema_rate: float = setting(0.9999, number(0, 1), "EMA decay of the evaluated weights")
    p_uncond: float = setting(
        0.0,
        number(0, 1),
        "probability that a label becomes the null class / a caption the empty prompt "
        "(classifier-free guidance, §4.3); needs a null class (model.num_classes = K + 1)",
    )
    mixed_precision: str = setting(
        "fp16", _Precision(), "autocast precision; `no` (or YAML's false) trains in fp32"
    )
    gradient_checkpointing: bool = setting(
        False, boolean, "recompute block activations in backward (less memory, slower)"
    )
    checkpoint_every: int = setting(
        1, integer(1), "with gradient_checkpointing: checkpoint every n-th block"
    )
    compile: bool = setting(False, boolean, "torch.compile the network")
    fused_adamw: bool = setting(False, boolean, "the fused AdamW kernel (where the device has it)")
    attention: str = setting(
        "sdpa", one_of(ATTENTION_BACKENDS), "attention kernel; the weights do not depend on it"
    )
    log_interval: int = setting(
        10, integer(1), "steps between logged loss, lr and throughput", identity=False
    )
    save_interval: int = setting(
        50_000, integer(1), "steps between resumable training states", identity=False
    )
    keep_last: int = setting(2, integer(1), "training states kept for resume", identity=False)
    seed: int = setting(1234, integer(), "initialisation and noise seed (+ rank, + step on resume)")
    run_dir: str = derived(
        "", path, "the run's state folder (keyed by what is trained)", identity=False
    )
    resume: bool = setting(
        True, boolean, "continue from the newest intact state of the same run", identity=False
    )
    cpu: bool = derived(False, boolean, "from launcher.cpu", identity=False)
    peak_tflops: float | None = setting(
        None, optional(positive), "per-device peak TFLOP/s for MFU; null = looked up by GPU name"
    )

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
        """Full UViT constructor kwargs: preset + overrides + the loop's attention/checkpoint options.
        Resolved once per model setting (a copy each call)."""
        key = repr((self.model, self.gradient_checkpointing, self.attention, self.checkpoint_every))
        cached = self.__dict__.get("_resolved")
        if cached is None or cached[0] != key:
            overrides = {k: v for k, v in self.model.items() if k != "preset"}
            kwargs = resolve_kwargs(self.model.get("preset"), **overrides)
            # §1.6: gradient checkpointing is a training option, not an architecture choice.
            kwargs.update(
                use_checkpoint=self.gradient_checkpointing,
                attention=self.attention,
                checkpoint_every=self.checkpoint_every,
            )
            cached = self.__dict__["_resolved"] = (key, kwargs)
        return dict(cached[1])

    def null_label(self) -> int | None:
        """Index of the CFG null class when labels are dropped (`models.checkpoint.label_roles`)."""
        kw = self.model_kwargs()
        return label_roles(kw.get("num_classes"), kw.get("clip_dim"), self.p_uncond)[1]

    def validate(self, num_processes: int = 1) -> TrainConfig:
        """Raise `ValueError` naming the dotted key of the first bad value; returns self."""
        check_fields(self, "training.")
        check_fields(self.data, "training.data.")
        integer(1)("launcher.num_processes", num_processes)
        if self.batch_size % num_processes:
            raise ValueError(
                f"training.batch_size ({self.batch_size}) must be divisible by the number of "
                f"processes ({num_processes})"
            )
        self._validate_model()
        return self

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
    """YAML reads an unquoted `no` as False: that means "no" mixed precision (the one place that
    turns it back)."""
    return "no" if v is False else v


def _reject_unknown(d: dict, cls, prefix: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in d:
        if key not in known:
            raise ValueError(f"{prefix}.{key} is not a known parameter; known: {sorted(known)}")


def section_fields() -> dict[str, dict[str, Any]]:
    """The declared fields of the `model` and `training` parameter sections (`training.data` is a
    nested dict): the parameter schema and docs/parameters.md are built from these."""
    model = {
        "preset": setting(
            None,
            optional(one_of(lambda: [*PRESETS, *OFFICIAL_CONFIGS])),
            "a paper backbone (needs img_size) or an official config; the keys below override it",
        )
    }
    model.update({k: f for k, f in parameters(UViTConfig).items() if k not in _LOOP_MODEL_KEYS})
    training: dict[str, Any] = dict(parameters(TrainConfig))
    training["data"] = parameters(DataConfig)
    return {"model": model, "training": training}
