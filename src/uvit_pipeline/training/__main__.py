"""Entry point run by `accelerate launch`: `python -m uvit_pipeline.training --config resolved.json`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch.distributed as dist

from .._io import read_json
from .config import TrainConfig
from .loop import train
from .stop import STOPPED_EXIT_CODE, TrainingStopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uvit_pipeline.training", description=__doc__)
    parser.add_argument(
        "--config", required=True, help="resolved TrainConfig JSON (TrainConfig.to_dict())"
    )
    args = parser.parse_args(argv)
    # Only rank 0 talks at INFO; other ranks report warnings and errors (RANK is set by the launcher).
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    path = Path(args.config)
    if not path.is_file():
        parser.error(f"--config {path} does not exist")
    config = TrainConfig.from_dict(read_json(path))
    try:
        final = train(config)  # validates first, against the processes it runs on
    except TrainingStopped as e:  # SIGTERM / SIGUSR1: the state is saved, every rank ends here
        if rank == 0:
            logging.getLogger(__name__).warning("%s", e)
        _shutdown_process_group()
        return STOPPED_EXIT_CODE
    logging.getLogger(__name__).info("Final checkpoint: %s", final)
    _shutdown_process_group()
    return 0


def _shutdown_process_group() -> None:
    # Instead of Accelerator.end_training(), which would also end the parent's MLflow run.
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
