"""Run training in a child `accelerate launch` process (architecture: the Kedro process never trains)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .._io import atomic_write_json, read_json
from ..launch import LaunchSpec, run_under_accelerate
from .config import TrainConfig

logger = logging.getLogger(__name__)


def launch_training(
    config: TrainConfig, spec: LaunchSpec, log_path: str | os.PathLike | None = None
) -> Path:
    """Write `run_dir/train_config.json`, run the child to completion, return `run_dir/final`.

    The child validates the config before any compute (`loop.train`); the Kedro pipeline has
    validated the parameters before any node ran. `spec.mixed_precision` and `spec.cpu` are taken
    from the config, so flags and Accelerator agree.
    The child inherits the environment (e.g. MLFLOW_RUN_ID set by the Kedro hook). Raises
    RuntimeError with the log tail when the child fails.
    """
    spec = LaunchSpec(
        **{**spec.__dict__, "mixed_precision": config.mixed_precision, "cpu": config.cpu}
    )
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = atomic_write_json(run_dir / "train_config.json", config.to_dict())
    log_path = Path(log_path) if log_path is not None else run_dir / "train.log"
    logger.info("Training state folder: %s", run_dir)
    run_under_accelerate(
        spec,
        run_dir,
        "uvit_pipeline.training",
        ["--config", str(config_path)],
        log_path=log_path,
        what="training child",
    )
    final = run_dir / "final"
    if not (final / "summary.json").is_file():
        raise RuntimeError(
            f"training child succeeded but {final} has no summary.json (log: {log_path})"
        )
    summary = read_json(final / "summary.json")
    logger.info(
        "Training finished: %s", {k: summary.get(k) for k in ("steps", "final_loss", "wall_time_s")}
    )
    return final
