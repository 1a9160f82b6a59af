"""A checkpoint directory as every reader sees it: its typed config (`CheckpointInfo`) and its weights.

Training writes `config.json` (the resolved training config plus `model_kwargs`, and the text encoder
of text models) into its final export; `import_pretrained` writes the same keys for an official file.
`read_checkpoint_info` turns it into one typed value that sampling, evaluation and the import read, so
the model arguments, the null label, the schedule and the latent scale are derived here once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from .._io import CHECKSUMS, UnreadableFile, read_json, sha256_file, verify_checksums
from .config import UViTConfig
from .uvit import UViT


def label_roles(num_classes: int | None, clip_dim: int | None, p_uncond: float) -> tuple:
    """(number of real classes, CFG null label) of a model; (None, None) when it has no classes.

    A class model trained with label dropping (p_uncond > 0) reserves its last class index for
    the null class (§1.1, §4.3); a text model's null condition is the encoded empty prompt instead,
    so it has no null label.
    """
    if clip_dim is not None or num_classes is None or int(num_classes) <= 0:
        return None, None
    if float(p_uncond) > 0:
        return int(num_classes) - 1, int(num_classes) - 1
    return int(num_classes), None


@dataclass(frozen=True)
class CheckpointInfo:
    """The typed reading of a checkpoint's config.json.

    model: the network's arguments; schedule: the noise schedule name (diffusion.SCHEDULES);
    p_uncond: the training label-dropping rate; data_kind: "pixels" or "latent_moments";
    scale_factor: the latent scale the model was trained with (§4.5; recorded for pixel models too,
    where it is unused); text_encoder: identity of the text encoder of a text model (None when
    not recorded); config: the file as read, for identities and logs.
    """

    path: Path
    model: UViTConfig
    schedule: str
    p_uncond: float
    data_kind: str
    scale_factor: float | None
    text_encoder: dict | None
    config: dict = field(repr=False, compare=False)

    @classmethod
    def from_config(cls, config: dict, path: str | os.PathLike) -> CheckpointInfo:
        where = Path(path) / "config.json"
        kwargs = config.get("model_kwargs")
        if not isinstance(kwargs, dict):
            raise ValueError(f"{where} has no 'model_kwargs' mapping")
        if "schedule" not in config:
            raise ValueError(f"{where} names no 'schedule'")
        data = config.get("data") or {}
        return cls(
            path=Path(path),
            model=UViTConfig.from_kwargs(kwargs, prefix=f"{where}: model_kwargs."),
            schedule=config["schedule"],
            p_uncond=float(config.get("p_uncond", 0.0)),
            data_kind=data.get("kind", "pixels"),
            scale_factor=data.get("scale_factor"),
            text_encoder=config.get("text_encoder"),
            config=config,
        )

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return self.model.to_dict()

    @property
    def is_text(self) -> bool:
        return self.model.clip_dim is not None

    @property
    def is_latent(self) -> bool:
        return self.data_kind == "latent_moments"

    @property
    def num_real_classes(self) -> int | None:
        """Classes of the data (the null class excluded); None for unconditional and text models."""
        return label_roles(self.model.num_classes, self.model.clip_dim, self.p_uncond)[0]

    @property
    def null_label(self) -> int | None:
        """The CFG null class index; None when the model was trained without label dropping."""
        return label_roles(self.model.num_classes, self.model.clip_dim, self.p_uncond)[1]

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape of one x_T: (channels, side, side) in pixel or latent space."""
        return self.model.in_chans, self.model.img_size, self.model.img_size

    @property
    def context_shape(self) -> tuple[int, int] | None:
        """(tokens, width) of a text model's contexts; None for other models."""
        return None if not self.is_text else (self.model.num_clip_token, self.model.clip_dim)


log = logging.getLogger(__name__)


def _remedy(p: Path) -> str:
    return (
        f"The checkpoint in {p} is unusable: delete that folder (for a catalog version, its version "
        "folder: the previous version is then used) and export it again by re-running training "
        "(it resumes from the newest intact training state) or import_pretrained"
    )


def _read_config(p: Path) -> dict:
    if (p / "config.json").is_file():
        return read_json(p / "config.json", _remedy(p))
    if (p / "state.json").is_file():
        return read_json(p / "state.json", _remedy(p)).get("config", {})
    raise FileNotFoundError(f"{p} has neither config.json nor state.json")


def _verify(p: Path) -> None:
    """Refuse a damaged file of a checkpoint directory, naming it: a final export or an import is
    checked against its `checksums.json`, a training state against the hashes in its state.json."""
    remedy = _remedy(p)
    if (p / "config.json").is_file():
        if not verify_checksums(p, remedy):
            log.warning(
                "%s has no %s (exported by an older release): its weights cannot be verified",
                p,
                CHECKSUMS,
            )
        return
    state = read_json(p / "state.json", remedy)
    for name, want in (state.get("file_sha256") or {}).items():
        if name.endswith(".safetensors") and (p / name).is_file():
            if sha256_file(p / name) != want:
                raise UnreadableFile(
                    p / name, "is damaged: its sha256 differs from state.json", remedy
                )


def _load_weights(path: Path, remedy: str) -> dict:
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types for a truncated file
        raise UnreadableFile(path, f"cannot be read ({type(e).__name__}: {e})", remedy) from None


def read_checkpoint_info(path: str | os.PathLike) -> CheckpointInfo:
    """The typed config of a final export, an imported checkpoint or a `<step>.ckpt` dir."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint directory {p} does not exist")
    return CheckpointInfo.from_config(_read_config(p), p)


def load_checkpoint_dir(path: str | os.PathLike) -> tuple[dict, dict, dict | None]:
    """(config dict, EMA state_dict, raw state_dict) of a final export or a `<step>.ckpt` dir.

    The raw state_dict is None when the directory holds EMA weights only (an imported official
    checkpoint: the released `.pth` files are the EMA networks, §3.3).
    """
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint directory {p} does not exist")
    config = _read_config(p)
    _verify(p)
    if not (p / "nnet_ema.safetensors").is_file():
        raise FileNotFoundError(f"checkpoint directory {p} lacks nnet_ema.safetensors")
    raw_file, remedy = p / "nnet.safetensors", _remedy(p)
    raw = _load_weights(raw_file, remedy) if raw_file.is_file() else None
    return config, _load_weights(p / "nnet_ema.safetensors", remedy), raw


def load_uvit_from_checkpoint(path: str | os.PathLike, which: str = "ema") -> UViT:
    """Rebuild the UViT recorded in a checkpoint dir and load `which` ("ema" | "raw") strictly."""
    if which not in ("ema", "raw"):
        raise ValueError(f"which must be 'ema' or 'raw', got {which!r}")
    config, ema_state, raw_state = load_checkpoint_dir(path)
    kwargs = config.get("model_kwargs")
    if not isinstance(kwargs, dict):
        raise ValueError(f"{Path(path) / 'config.json'} has no 'model_kwargs' mapping")
    if which == "raw" and raw_state is None:
        raise ValueError(
            f"checkpoint directory {path} holds EMA weights only (no nnet.safetensors, e.g. an "
            "imported official checkpoint): load it with which='ema' (parameter "
            "evaluation.use_ema or generate.use_ema: true)"
        )
    # Gradient checkpointing only matters for training; weights are identical either way.
    model = UViT(**{**kwargs, "use_checkpoint": False})
    model.load_state_dict(ema_state if which == "ema" else raw_state, strict=True)
    return model.eval()
