"""`device: auto` in the parameter sections that run torch in the Kedro process (`DEVICE_SECTIONS`):
CUDA when this machine has it, else the CPU, decided once when the parameters are read and logged
once. An explicit `cuda` on a machine without it is refused by the parameter check
(`pipelines/params.py`) before any node runs."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

DEVICE_SECTIONS = ("features", "text", "evaluation", "generate")
AUTO = "auto"
_logged: set[str] = set()


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str) -> str:
    """`auto` -> `cuda` or `cpu`; any other name as given."""
    if device != AUTO:
        return device
    chosen = "cuda" if cuda_available() else "cpu"
    if chosen not in _logged:
        _logged.add(chosen)
        log.info(
            "device auto: %s", "CUDA" if chosen == "cuda" else "CPU (this machine has no CUDA)"
        )
    return chosen


def resolve_devices(params: dict[str, Any]) -> dict[str, Any]:
    """Each `DEVICE_SECTIONS` section's `device: auto` replaced by the device it means (in place)."""
    for name in DEVICE_SECTIONS:
        section = params.get(name)
        if isinstance(section, dict) and section.get("device") == AUTO:
            section["device"] = resolve_device(AUTO)
    return params


def unavailable_cuda(params: dict[str, Any]) -> list[str]:
    """`section.device=value` for every section that asks for CUDA on a machine without it (torch is
    asked only when a section names cuda)."""
    asked = [
        f"{name}.device={params[name]['device']}"
        for name in DEVICE_SECTIONS
        if isinstance(params.get(name), dict)
        and str(params[name].get("device") or "").startswith("cuda")
    ]
    return asked if asked and not cuda_available() else []
