"""Run training in a child `accelerate launch` process (architecture: the Kedro process never trains)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from uvit_pipeline.errors import ChildFailed

from .._io import atomic_write_json, read_json
from ..launch import LaunchSpec, Terminated, run_under_accelerate
from .config import TrainConfig
from .monitor import read_jsonl
from .stop import TrainingStopped

# Seconds a stopping training gets (finish the step, save the state) before its processes are
# killed: `launch` waits this long after forwarding a SIGTERM, and so does torchrun's agent.
STOP_GRACE_S = 300

logger = logging.getLogger(__name__)


def launch_training(
    config: TrainConfig, spec: LaunchSpec, log_path: str | os.PathLike | None = None
) -> Path:
    """Write `run_dir/train_config.json`, run the child to completion, return `run_dir/final`.

    The child validates the config before any compute (`loop.train`); the Kedro pipeline has
    validated the parameters before any node ran. `spec.mixed_precision` and `spec.cpu` are taken
    from the config, so flags and Accelerator agree.
    The child inherits the environment (e.g. MLFLOW_RUN_ID set by the Kedro hook). Raises
    RuntimeError with the log tail when the child fails, and `TrainingStopped` (naming the step
    and the saved state) when a SIGTERM or SIGUSR1 stopped it: to this process (`launch` forwards
    it) or to the training processes themselves.
    """
    spec = LaunchSpec(
        **{**spec.__dict__, "mixed_precision": config.mixed_precision, "cpu": config.cpu}
    )
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = atomic_write_json(run_dir / "train_config.json", config.to_dict())
    log_path = Path(log_path) if log_path is not None else run_dir / "train.log"
    logger.info("Training state folder: %s", run_dir)
    events = run_dir / "events.jsonl"
    seen = len(read_jsonl(events)) if events.is_file() else 0
    try:
        run_under_accelerate(
            spec,
            run_dir,
            "uvit_pipeline.training",
            ["--config", str(config_path)],
            log_path=log_path,
            # A stop signal (ours forwarded, or the scheduler's to every process) gives the ranks
            # time to finish their step and save the state before anything is killed.
            env_extra={
                "UVIT_STOP_GRACE_S": str(STOP_GRACE_S),
                "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(STOP_GRACE_S),
            },
            what="training child",
        )
    except (ChildFailed, Terminated, KeyboardInterrupt) as e:
        stopped = _stopped_event(events, seen)
        if stopped is None:
            raise
        path = run_dir / "ckpts" / f"{stopped['step']}.ckpt"
        raise TrainingStopped(
            stopped.get("signal", "a signal"), stopped["step"], config.n_steps, str(path)
        ) from e
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


def _stopped_event(events: Path, seen: int) -> dict | None:
    """The `stopped` record the child wrote after the first `seen` records, if it ended that way."""
    if not events.is_file():
        return None
    new = read_jsonl(events)[seen:]
    return new[-1] if new and new[-1].get("event") == "stopped" else None
