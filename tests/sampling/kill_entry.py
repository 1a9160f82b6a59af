"""A `run_parallel` entry for the sampling resume test: rank `payload["kill_rank"]` is killed with
SIGKILL right after writing its first chunk of the real sampling entry."""

from uvit_pipeline.sampling import generate

from ..metrics.kill_entry import die_after_first_write


def sample_then_die(payload: dict, part) -> None:
    if part.rank == payload["kill_rank"]:
        die_after_first_write(generate, "atomic_write")
    generate.sample_part(payload, part)
