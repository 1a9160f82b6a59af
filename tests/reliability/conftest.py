"""Builders of bad inputs for the reliability suite (docs/reliability.md)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uvit_pipeline._io import StagingLock


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 512 KiB filesystem (mounted as root; skipped where mounting is not possible)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs this test as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


@pytest.fixture
def short_lock_wait(monkeypatch):
    """Report a lock conflict after 0.2 s instead of waiting for a dying holder (StagingLock.wait_s)."""
    monkeypatch.setattr(StagingLock, "wait_s", 0.2)


def png_bytes(w: int, h: int, rows: list[bytes], bit_depth: int = 8, colour: int = 2) -> bytes:
    """A PNG whose header says `w`x`h` but whose (well-formed) zlib stream holds only `rows`."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, bit_depth, colour, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)  # filter type 0 per row
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes(w: int = 16, h: int = 16, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def imagenet_tree(root: Path, per_class: int = 5, classes: int = 2, size: int = 16) -> Path:
    """`root/train/<class>/<i>.jpg` with distinct random images; returns root."""
    for c in range(classes):
        d = root / "train" / f"n{c:02d}"
        d.mkdir(parents=True)
        for i in range(per_class):
            (d / f"{i}.jpg").write_bytes(jpeg_bytes(size, size, seed=100 * c + i))
    return root


class LockHolder:
    """Another process holding a `StagingLock` on `folder` until `close()`; with `run=True`, the lock
    a Kedro run holds on it (`pipelines._staging.hold_for_run`)."""

    def __init__(self, folder: Path, run: bool = False):
        take = (
            f"from uvit_pipeline.pipelines._staging import hold_for_run; hold_for_run({str(folder)!r})"
            if run
            else f"from uvit_pipeline._io import StagingLock; lock = StagingLock({str(folder)!r}).acquire()"
        )
        code = f"import sys; {take}; print('locked', flush=True); sys.stdin.read()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "locked"
        self.pid = self.proc.pid

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL, without waiting: the kernel drops the lock once the process is gone."""
        self.proc.kill()
