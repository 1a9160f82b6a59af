"""A `run_parallel` entry for the resume test: rank `payload["kill_rank"]` is killed with SIGKILL
right after writing its first block, then the real scoring entry runs."""

import os
import signal

from uvit_pipeline.metrics import blocks


def score_then_die(payload: dict, part) -> None:
    if part.rank == payload["kill_rank"]:
        write = blocks._write_block

        def write_then_die(*args, **kwargs):
            write(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        blocks._write_block = write_then_die
    blocks.score_part(payload, part)
