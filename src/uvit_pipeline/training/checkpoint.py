"""Training-state checkpoints and the final export (uvit-reference §4.4 checkpoint layout).

Training state: `<run_dir>/ckpts/<step>.ckpt/` with `nnet.safetensors`, `nnet_ema.safetensors`,
`optimizer.pt`, `lr_scheduler.pt`, optional `scaler.pt` and `state.json`. It is written into
`<step>.ckpt.tmp/`, fsynced, then renamed: the rename defines completeness, so a crash mid-write
leaves only a `.tmp` directory that resume ignores.
Final export: `<run_dir>/final/` with `nnet_ema.safetensors`, `nnet.safetensors`, `config.json`,
`summary.json`, written the same way.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .._io import atomic_write_json, replace_dir
from ..models import UViT

logger = logging.getLogger(__name__)

_CKPT_RE = re.compile(r"^(\d+)\.ckpt$")
STATE_FILES = (
    "nnet.safetensors",
    "nnet_ema.safetensors",
    "optimizer.pt",
    "lr_scheduler.pt",
    "state.json",
)
FINAL_FILES = ("nnet.safetensors", "nnet_ema.safetensors", "config.json", "summary.json")


def _cpu_state(module_or_state: nn.Module | dict) -> dict[str, torch.Tensor]:
    state = (
        module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    )
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (kept as a name: checkpoints and tests use it)."""
    atomic_write_json(path, obj)


def _fresh_tmp(final: Path) -> Path:
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _commit_dir(tmp: Path, final: Path) -> None:
    """fsync and rename `tmp` onto `final` in one step (replacing an older one)."""
    replace_dir(tmp, final)


def save_training_state(
    ckpt_root: str | os.PathLike,
    step: int,
    nnet: nn.Module,
    nnet_ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler,
    state: dict[str, Any],
    scaler=None,
    keep_last: int | None = None,
) -> Path:
    """Write `<ckpt_root>/<step>.ckpt/` atomically and prune to the newest `keep_last` states."""
    final = Path(ckpt_root) / f"{step}.ckpt"
    tmp = _fresh_tmp(final)
    save_file(_cpu_state(nnet), tmp / "nnet.safetensors")
    save_file(_cpu_state(nnet_ema), tmp / "nnet_ema.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(lr_scheduler.state_dict(), tmp / "lr_scheduler.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), tmp / "scaler.pt")
    write_json(tmp / "state.json", {**state, "step": step})
    _commit_dir(tmp, final)
    if keep_last is not None:
        for old in list_checkpoints(ckpt_root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(ckpt_root: str | os.PathLike) -> list[Path]:
    """Complete `<step>.ckpt` directories, oldest first; `.tmp` leftovers and partial dirs ignored."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir() and all((p / f).is_file() for f in STATE_FILES):
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def find_latest_checkpoint(ckpt_root: str | os.PathLike) -> Path | None:
    """Newest complete training state under `ckpt_root`, or None."""
    ckpts = list_checkpoints(ckpt_root)
    return ckpts[-1] if ckpts else None


def load_training_state(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """Read a `<step>.ckpt` dir: weights via safetensors, optimizer/scheduler with weights_only=True."""
    p = Path(path)
    missing = [f for f in STATE_FILES if not (p / f).is_file()]
    if missing:
        raise FileNotFoundError(f"training state {p} is incomplete: missing {missing}")
    out = {
        "nnet": load_file(p / "nnet.safetensors"),
        "nnet_ema": load_file(p / "nnet_ema.safetensors"),
        # Untrusted files: weights_only refuses arbitrary pickles.
        "optimizer": torch.load(p / "optimizer.pt", map_location=map_location, weights_only=True),
        "lr_scheduler": torch.load(p / "lr_scheduler.pt", weights_only=True),
        "state": json.loads((p / "state.json").read_text(encoding="utf-8")),
        "scaler": None,
    }
    if (p / "scaler.pt").is_file():
        out["scaler"] = torch.load(p / "scaler.pt", weights_only=True)
    return out


def export_final(
    final_dir: str | os.PathLike,
    nnet: nn.Module,
    nnet_ema: nn.Module,
    config: dict[str, Any],
    summary: dict[str, Any],
) -> Path:
    """Write the final export directory atomically; returns its path."""
    final = Path(final_dir)
    tmp = _fresh_tmp(final)
    save_file(_cpu_state(nnet_ema), tmp / "nnet_ema.safetensors")
    save_file(_cpu_state(nnet), tmp / "nnet.safetensors")
    write_json(tmp / "config.json", config)
    write_json(tmp / "summary.json", summary)
    _commit_dir(tmp, final)
    return final


def load_checkpoint_dir(path: str | os.PathLike) -> tuple[dict, dict, dict | None]:
    """(config dict, EMA state_dict, raw state_dict) of a final export or a `<step>.ckpt` dir.

    The raw state_dict is None when the directory holds EMA weights only (an imported official
    checkpoint: the released `.pth` files are the EMA networks, §3.3).
    """
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint directory {p} does not exist")
    if (p / "config.json").is_file():
        config = json.loads((p / "config.json").read_text(encoding="utf-8"))
    elif (p / "state.json").is_file():
        config = json.loads((p / "state.json").read_text(encoding="utf-8")).get("config", {})
    else:
        raise FileNotFoundError(f"{p} has neither config.json nor state.json")
    if not (p / "nnet_ema.safetensors").is_file():
        raise FileNotFoundError(f"checkpoint directory {p} lacks nnet_ema.safetensors")
    raw_file = p / "nnet.safetensors"
    raw = load_file(raw_file) if raw_file.is_file() else None
    return config, load_file(p / "nnet_ema.safetensors"), raw


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
            "imported official checkpoint): load it with which='ema' (evaluation.use_ema: true)"
        )
    # Gradient checkpointing only matters for training; weights are identical either way.
    model = UViT(**{**kwargs, "use_checkpoint": False})
    model.load_state_dict(ema_state if which == "ema" else raw_state, strict=True)
    return model.eval()
