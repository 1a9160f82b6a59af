"""Helpers shared by the benchmark scripts (measurement code, not part of the library).

Imported as `_common` by scripts run as `python benchmarks/<name>.py` (their folder is sys.path[0]).
"""

from __future__ import annotations

import json
import math
import platform
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import einops
import torch
import torch.nn.functional as F

from uvit_pipeline._io import atomic_write_json
from uvit_pipeline.models import Attention
from uvit_pipeline.training.monitor import sync


def original_attention_forward(self: Attention, x: torch.Tensor) -> torch.Tensor:
    """The official `flash` branch (docs/reference.md §1.3): q, k, v laid out with einops and cast to
    float32 before SDPA (default scale). A measurement baseline, patched onto our Attention modules."""
    qkv = self.qkv(x)
    qkv = einops.rearrange(qkv, "B L (K H D) -> K B H L D", K=3, H=self.num_heads).float()
    q, k, v = qkv[0], qkv[1], qkv[2]
    x = F.scaled_dot_product_attention(q, k, v)
    x = einops.rearrange(x, "B H L D -> B L (H D)")
    return self.proj(x)


def use_original_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Swap every Attention's forward for `original_attention_forward`; weights are untouched."""
    model.set_attention("sdpa")
    for m in model.modules():
        if isinstance(m, Attention):
            m.forward = types.MethodType(original_attention_forward, m)
    return model


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU with its intra-op thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def timed(fn: Callable[[], object], repeats: int = 1, device: torch.device | None = None) -> float:
    """Best wall time in seconds of `repeats` calls after one untimed warm-up call; kernels queued on
    `device` are waited for, so GPU timings are honest."""
    device = device or torch.device("cpu")
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def write_json(path: str | Path, payload: dict) -> Path:
    """Write a results file atomically (creating its folder)."""
    return atomic_write_json(Path(path), payload)


def merge_json(path: str | Path, key: str, entry: dict) -> Path:
    """Set `results[key] = entry` in the JSON file at `path` (one entry per device), atomically."""
    path = Path(path)
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[key] = entry
    return write_json(path, results)


def fmt(value) -> str:
    """Table cell: None as '-', bools as yes/no, floats to 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")


def markdown_table(rows: Sequence[dict], cols: Sequence[str]) -> str:
    """A Markdown table of `rows` (dicts) with columns `cols` (missing keys print as '-')."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: Sequence[dict], cols: Sequence[str]) -> str:
    """The same table with padded columns, for a terminal."""
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    out = [" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    out.append("-|-".join("-" * w for w in widths))
    out += [" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)
