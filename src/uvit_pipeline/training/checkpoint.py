"""Training-state checkpoints and the final export (docs/reference.md §4.4 checkpoint layout).

Training state: `<run_dir>/ckpts/<step>.ckpt/` with `nnet.safetensors`, `nnet_ema.safetensors`,
`optimizer.pt`, `lr_scheduler.pt`, optional `scaler.pt` and `state.json`. It is written into
`<step>.ckpt.tmp/`, fsynced, then renamed: the rename defines completeness, so a crash mid-write
leaves only a `.tmp` directory that resume ignores. `state.json`, written last, records the sha256
of every other file; resume verifies them and falls back to the newest intact state.
Final export: `<run_dir>/final/` with `nnet_ema.safetensors`, `nnet.safetensors`, `config.json`,
`summary.json`, written the same way, and `checksums.json` (sha256 of each) written last; readers
load it with `models.checkpoint` (re-exported here), which checks them and refuses a damaged file.
"""

from __future__ import annotations

import hashlib
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

from uvit_pipeline.errors import UserFacingError

from .._io import (
    atomic_write_json,
    replace_dir,
    write_checksums,
    writing,
)
from ..models.checkpoint import load_checkpoint_dir, load_uvit_from_checkpoint

__all__ = [
    "CorruptCheckpoint",
    "export_final",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint_dir",
    "load_latest_training_state",
    "load_training_state",
    "load_uvit_from_checkpoint",
    "save_training_state",
    "write_json",
]

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


class CorruptCheckpoint(UserFacingError, RuntimeError):
    """A training state that cannot be used; `path` and `reason` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"training state {self.path} is corrupt: {reason}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


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
    with writing(tmp):  # a full disk names the state being written
        save_file(_cpu_state(nnet), tmp / "nnet.safetensors")
        save_file(_cpu_state(nnet_ema), tmp / "nnet_ema.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(lr_scheduler.state_dict(), tmp / "lr_scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        sums = {f.name: _sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        write_json(tmp / "state.json", {**state, "step": step, "file_sha256": sums})
    _commit_dir(tmp, final)
    if keep_last is not None:
        for old in list_checkpoints(ckpt_root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _step_dirs(ckpt_root: str | os.PathLike) -> list[Path]:
    """Every committed `<step>.ckpt` directory (complete or not), oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found) if p.is_dir()]


def list_checkpoints(ckpt_root: str | os.PathLike) -> list[Path]:
    """Complete `<step>.ckpt` directories, oldest first; `.tmp` leftovers and partial dirs ignored."""
    return [p for p in _step_dirs(ckpt_root) if all((p / f).is_file() for f in STATE_FILES)]


def find_latest_checkpoint(ckpt_root: str | os.PathLike) -> Path | None:
    """Newest complete training state under `ckpt_root`, or None."""
    ckpts = list_checkpoints(ckpt_root)
    return ckpts[-1] if ckpts else None


def load_training_state(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """Read a `<step>.ckpt` dir: weights via safetensors, optimizer/scheduler with weights_only=True.

    Raises `CorruptCheckpoint` (naming the file and why) when a file is missing, differs from
    the sha256 recorded in state.json, or fails to load.
    """
    p = Path(path)
    missing = [f for f in STATE_FILES if not (p / f).is_file()]
    if missing:
        raise CorruptCheckpoint(p, f"missing {missing}")
    try:
        state = json.loads((p / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CorruptCheckpoint(p, f"state.json is unreadable ({e})") from None
    for name, want in (state.get("file_sha256") or {}).items():  # absent in older states
        if not (p / name).is_file():
            raise CorruptCheckpoint(p, f"{name} is missing")
        if _sha256(p / name) != want:
            raise CorruptCheckpoint(p, f"{name} differs from the sha256 recorded in state.json")
    try:
        out = {
            "nnet": load_file(p / "nnet.safetensors"),
            "nnet_ema": load_file(p / "nnet_ema.safetensors"),
            # Untrusted files: weights_only refuses arbitrary pickles.
            "optimizer": torch.load(
                p / "optimizer.pt", map_location=map_location, weights_only=True
            ),
            "lr_scheduler": torch.load(p / "lr_scheduler.pt", weights_only=True),
            "state": state,
            "scaler": None,
        }
        if (p / "scaler.pt").is_file():
            out["scaler"] = torch.load(p / "scaler.pt", weights_only=True)
    except Exception as e:  # safetensors / unpickling raise many types for a damaged file
        raise CorruptCheckpoint(p, f"cannot load ({type(e).__name__}: {e})") from None
    return out


def load_latest_training_state(
    ckpt_root: str | os.PathLike, map_location="cpu"
) -> tuple[Path | None, dict[str, Any] | None]:
    """(path, state) of the newest intact training state, or (None, None) when there is none.

    A corrupt newer state is skipped with a warning naming it and why; if every state is corrupt
    this raises, so a run never silently starts over.
    """
    bad = []
    for p in reversed(_step_dirs(ckpt_root)):
        try:
            state = load_training_state(p, map_location)
        except CorruptCheckpoint as e:
            logger.warning("%s; falling back to the previous training state", e)
            bad.append(str(e))
            continue
        return p, state
    if bad:
        raise RuntimeError(
            "no intact training state to resume from:\n  " + "\n  ".join(bad) + "\nDelete "
            "these directories to train from scratch in this run directory, or set "
            "training.resume: false"
        )
    return None, None


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
    with writing(tmp):
        save_file(_cpu_state(nnet_ema), tmp / "nnet_ema.safetensors")
        save_file(_cpu_state(nnet), tmp / "nnet.safetensors")
        write_json(tmp / "config.json", config)
        write_json(tmp / "summary.json", summary)
        write_checksums(tmp, list(FINAL_FILES))
    _commit_dir(tmp, final)
    return final
