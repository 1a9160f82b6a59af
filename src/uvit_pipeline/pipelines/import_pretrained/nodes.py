"""Nodes of the `import_pretrained` pipeline: published U-ViT weights and FID statistics -> our catalog."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from uvit_pipeline.metrics.fid import load_stats
from uvit_pipeline.models import OFFICIAL_CONFIGS
from uvit_pipeline.models.official import (
    OFFICIAL_DIFFUSION,
    check_is_uvit_state_dict,
    infer_official_config,
    state_dict_problems,
)
from uvit_pipeline.training.checkpoint import write_json

log = logging.getLogger(__name__)


def import_uvit_checkpoint(pretrained: dict) -> str:
    """An official `.pth` (plain EMA state dict) -> a checkpoint directory in our format."""
    path = pretrained.get("checkpoint_file")
    if not path or not Path(path).is_file():
        raise FileNotFoundError(
            f"import_pretrained.checkpoint_file: no file at {path!r}. Download the official "
            "checkpoint (U-ViT README, e.g. imagenet256_uvit_huge.pth) and pass its path."
        )
    try:  # untrusted input: tensors and plain containers only
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unpickling refusal as a clear error
        raise ValueError(f"{path} could not be loaded safely as a tensor file: {e}") from e
    state = check_is_uvit_state_dict(obj, path)
    name = pretrained.get("config")
    if name is not None and name not in OFFICIAL_CONFIGS:
        raise ValueError(
            f"import_pretrained.config must be one of {sorted(OFFICIAL_CONFIGS)}, got {name!r}"
        )
    name = name or infer_official_config(state, str(path))
    kwargs = {**OFFICIAL_CONFIGS[name], "use_checkpoint": False}
    problems = state_dict_problems(state, kwargs)
    if problems:
        raise ValueError(f"{path} does not match config {name}:\n  " + "\n  ".join(problems))
    # A staging directory next to the catalog location: DirectoryDataset then moves it in with one rename.
    staging = Path("data/06_models")
    staging.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="import-", dir=staging))
    # Released files hold the EMA weights only (§3.3): there is no raw `nnet.safetensors`.
    save_file({k: v.contiguous() for k, v in state.items()}, out / "nnet_ema.safetensors")
    config = {
        "model_kwargs": kwargs,
        **OFFICIAL_DIFFUSION[name],
        "official_config": name,
        "imported_from": os.path.abspath(path),
    }
    write_json(out / "config.json", config)
    write_json(out / "summary.json", {"imported": True, "official_config": name})
    log.info("Imported %s as %s (%d tensors)", path, name, len(state))
    return str(out)


def import_reference_stats(pretrained: dict) -> dict:
    """An official `fid_stats_*.npz` (keys mu, sigma) -> the reference-statistics entry, as is."""
    path = pretrained.get("reference_stats_file")
    if not path:
        raise ValueError(
            "import_pretrained.reference_stats_file must name an official fid_stats .npz file"
        )
    mu, sigma = load_stats(path)
    return {"mu": mu, "sigma": sigma, "network": "inception_v3_fid"}
