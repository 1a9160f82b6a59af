"""`run_parallel` entries for the resume tests: rank `payload["kill_rank"]` is killed with SIGKILL
right after writing its first block of the real scoring or reference entry."""

import os
import signal

from uvit_pipeline.metrics import blocks


def die_after_first_write(module, name: str) -> None:
    """Replace the writer `module.<name>` in this process by one that writes, then SIGKILLs it."""
    write = getattr(module, name)

    def write_then_die(*args, **kwargs):
        write(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(module, name, write_then_die)


def score_then_die(payload: dict, part) -> None:
    if part.rank == payload["kill_rank"]:
        die_after_first_write(blocks, "_write_block")
    blocks.score_part(payload, part)


def reference_then_die(payload: dict, part) -> None:
    if part.rank == payload["kill_rank"]:
        die_after_first_write(blocks, "_write_block")
    blocks.reference_part(payload, part)
