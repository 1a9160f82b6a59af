"""Nodes of the `import_pretrained` pipeline: published U-ViT weights and FID statistics -> our catalog."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from uvit_pipeline._io import atomic_write_json, write_checksums
from uvit_pipeline.models import OFFICIAL_CONFIGS, CheckpointInfo
from uvit_pipeline.models.official import (
    OFFICIAL_DIFFUSION,
    check_is_uvit_state_dict,
    infer_official_config,
    state_dict_problems,
)
from uvit_pipeline.pipelines._references import record_inception
from uvit_pipeline.pipelines._staging import staging_dir

log = logging.getLogger(__name__)


def _read_checkpoint(path: str, config_name: str | None) -> tuple[str, dict]:
    """(official config name, state dict) of an official `.pth`, checked key by key."""
    try:  # untrusted input: tensors and plain containers only
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unpickling refusal as a clear error
        raise ValueError(f"{path} could not be loaded safely as a tensor file: {e}") from e
    state = check_is_uvit_state_dict(obj, path)
    name = config_name or infer_official_config(state, str(path))
    problems = state_dict_problems(state, {**OFFICIAL_CONFIGS[name], "use_checkpoint": False})
    if problems:
        raise ValueError(f"{path} does not match config {name}:\n  " + "\n  ".join(problems))
    return name, state


def import_official_files(
    pretrained_checkpoint: str,
    official_fid_stats: dict | None,
    inception_weights: str,
    import_pretrained: dict,
    model: dict,
    paths: dict,
) -> tuple[str, dict, str]:
    """An official `.pth` (plain EMA state dict, §2) + its `fid_stats` file -> checkpoint, reference
    statistics and the FID network, all or nothing: every input is read and checked before any
    output is written."""
    name, state = _read_checkpoint(pretrained_checkpoint, import_pretrained["config"])
    expected = model.get("preset")
    if expected in OFFICIAL_CONFIGS and expected != name:
        raise ValueError(
            f"{pretrained_checkpoint} holds the {name} model, but this environment is the "
            f"{expected} experiment (model.preset): run the import with `--env {name}`, or set "
            f"import_pretrained.config: {expected} to check it against that configuration"
        )
    if not official_fid_stats or "mu" not in official_fid_stats:
        raise ValueError(
            "official_fid_stats: no official statistics (mu, sigma) for this environment; its "
            "catalog entry must name the fid_stats .npz the checkpoint's numbers are computed against"
        )
    network = record_inception(inception_weights, paths)
    kwargs = {**OFFICIAL_CONFIGS[name], "use_checkpoint": False}
    out = staging_dir(
        paths["staging"], "import", {"file": str(Path(pretrained_checkpoint).resolve())}
    )
    # Released files hold the EMA weights only (§3.3): there is no raw `nnet.safetensors`.
    save_file({k: v.contiguous() for k, v in state.items()}, out / "nnet_ema.safetensors")
    config = {
        "model_kwargs": kwargs,
        **OFFICIAL_DIFFUSION[name],
        "official_config": name,
        "imported_from": str(Path(pretrained_checkpoint).resolve()),
    }
    CheckpointInfo.from_config(config, out)  # what sampling will read: refuse a config it cannot
    atomic_write_json(out / "config.json", config)
    atomic_write_json(out / "summary.json", {"imported": True, "official_config": name})
    write_checksums(out, ["nnet_ema.safetensors", "config.json", "summary.json"])
    log.info("Imported %s as %s (%d tensors)", pretrained_checkpoint, name, len(state))
    return str(out), official_fid_stats, network
