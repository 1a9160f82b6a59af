"""Entries of `run_parallel` for the data-parallel extraction tests: the real entries, with every
block file a process writes recorded (one line "<rank> <file name>" in $UVIT_TEST_BLOCK_LOG), and
with the rank named by $UVIT_TEST_KILL_RANK killed by SIGKILL right after its first block."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from uvit_pipeline.data import extract, text_features


def _instrumented(module, payload: dict, part) -> None:
    real = module.save_block

    def save(path, arrays) -> None:
        real(path, arrays)
        with open(os.environ["UVIT_TEST_BLOCK_LOG"], "a") as log:
            log.write(f"{part.rank} {Path(path).name}\n")
        if os.environ.get("UVIT_TEST_KILL_RANK") == str(part.rank):
            os.kill(os.getpid(), signal.SIGKILL)

    module.save_block = save
    try:
        module.extract_blocks(payload, part)
    finally:
        module.save_block = real


def features(payload: dict, part) -> None:
    _instrumented(extract, payload, part)


def text(payload: dict, part) -> None:
    _instrumented(text_features, payload, part)
