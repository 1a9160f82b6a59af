"""Throughput, memory and MFU measurement plus the rank-0 JSONL writers (style: "measure what you claim")."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import writing

logger = logging.getLogger(__name__)

# Dense fp16/bf16 tensor-core peak per device in TFLOP/s (vendor datasheets, SXM parts where both
# exist). MFU is reported against this 16-bit peak even for fp32 runs; override with
# `training.peak_tflops` for other parts or precisions.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
    "L4": 121.0,
    "V100": 125.0,
    "T4": 65.0,
}


def peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of one device, or None when unknown (then MFU is not logged)."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA max allocated on GPUs; process RSS high-water mark on CPU (ru_maxrss is KiB on Linux)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def sync(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def param_hash(module: nn.Module) -> str:
    """sha256 over the state_dict (sorted keys, raw bytes): equal hashes = identical weights."""
    h = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(key.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _last_line_start(f, end: int) -> int:
    """Offset just after the last newline before `end` (0 when there is none)."""
    pos = end
    while pos > 0:
        size = min(1 << 16, pos)
        f.seek(pos - size)
        block = f.read(size)
        i = block.rfind(b"\n")
        if i >= 0:
            return pos - size + i + 1
        pos -= size
    return 0


def repair_jsonl(path: str | os.PathLike) -> int:
    """Cut a torn tail off a JSON-lines file (what a full disk or a power cut leaves: a last line
    without its newline, or a last line that does not parse), with a warning; returns bytes cut.
    Appending after a torn line would glue the next record onto it."""
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        keep = end
        while keep > 0:
            f.seek(keep - 1)
            if f.read(1) != b"\n":  # a last line without its newline is torn
                keep = _last_line_start(f, keep)
                continue
            start = _last_line_start(f, keep - 1)
            f.seek(start)
            line = f.read(keep - start).strip()
            try:
                if line:
                    json.loads(line)
                break
            except (ValueError, UnicodeDecodeError):
                keep = start
        if keep < end:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            logger.warning(
                "%s ended in a torn record (%d bytes, e.g. from a full disk or a power cut); "
                "cut it off before appending",
                path,
                end - keep,
            )
    return end - keep


def _parse_line(line: str) -> tuple[dict | None, bool]:
    """(record, whole line parsed): a line glued onto a torn record yields the complete record at
    its end, if any."""
    try:
        record = json.loads(line)
        return (record, True) if isinstance(record, dict) else (None, False)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for i in range(1, len(line)):
        if line[i] != "{":
            continue
        try:
            record, end = decoder.raw_decode(line, i)
        except ValueError:
            continue
        if isinstance(record, dict) and not line[end:].strip():
            return record, False
    return None, False


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every complete record of a JSON-lines file. Lines that do not parse (a torn record, or one
    an older release glued a record onto) are skipped, keeping a complete record at their end,
    with one warning naming the file and the line numbers."""
    path = Path(path)
    records, bad = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            record, whole = _parse_line(line) if len(line) < (1 << 20) else (None, False)
            if record is not None:
                records.append(record)
            if not whole:
                bad.append(number)
    if bad:
        logger.warning(
            "%s: %d line(s) are not complete JSON records (lines %s; torn writes); read the %d "
            "complete records",
            path,
            len(bad),
            ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else ""),
            len(records),
        )
    return records


class JsonlWriter:
    """Append-only JSON-lines file, flushed after every record (safe to tail while training); a torn
    tail left by a crash is cut on open (`repair_jsonl`)."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.enabled = enabled
        self._f = None
        if enabled:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            repair_jsonl(path)
            self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        if self._f is not None:
            with writing(self._f.name):  # a full disk names the log
                self._f.write(json.dumps({"time": time.time(), **record}) + "\n")
                self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
