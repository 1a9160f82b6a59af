"""Nodes of the `training` pipeline: resolve the config, launch `accelerate launch`, return the checkpoint."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import mlflow

from uvit_pipeline.launch import LaunchSpec
from uvit_pipeline.training import TrainConfig, launch_training

log = logging.getLogger(__name__)


def expected_store_meta(features: dict) -> dict:
    """What the feature store must have been built with for this experiment (checked before training)."""
    meta = {
        "kind": features["kind"],
        "resolution": features["resolution"],
        "crop": features["crop"],
    }
    if (
        features["kind"] == "latent_moments"
    ):  # another autoencoder or scale factor is another latent space
        meta.update(scale_factor=features["scale_factor"], encoder=str(features["autoencoder"]))
    return meta


def make_train_config(
    model: dict, training: dict, launcher: dict, features: dict, store_path: str, run_root: str
) -> TrainConfig:
    """Parameters -> validated TrainConfig. The run directory is keyed by the config, so re-running the same
    experiment resumes from its newest complete training state (architecture §4)."""
    cfg = dict(training)
    cfg["model"] = dict(model)
    cfg["data"] = {
        **(training.get("data") or {}),
        "path": store_path,
        "kind": features["kind"],
        "scale_factor": features["scale_factor"],
        "expected_meta": expected_store_meta(features),
    }
    cfg["cpu"] = bool(launcher.get("cpu", False))
    identity = {
        k: v
        for k, v in cfg.items()
        if k not in ("resume", "log_interval", "save_interval", "keep_last")
    }
    identity["data"] = {
        **cfg["data"],
        "path": None,
    }  # any version of the same store resumes the same run
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[
        :12
    ]
    cfg["run_dir"] = str(Path(run_root) / key)
    config = TrainConfig.from_dict(cfg)
    config.validate(num_processes=int(launcher.get("num_processes", 1)))
    return config


def train_uvit(
    image_features: str,
    model: dict,
    training: dict,
    launcher: dict,
    features: dict,
    experiment: str,
) -> tuple[str, dict]:
    """Launch the training child process; returns the final checkpoint directory and a summary."""
    config = make_train_config(
        model,
        training,
        launcher,
        features,
        image_features,
        run_root=f"data/06_models/{experiment}/train_state",
    )
    env = {}
    run = mlflow.active_run()
    if run is not None:  # rank 0 of the child logs its curves into the run kedro-mlflow opened
        env = {
            "MLFLOW_RUN_ID": run.info.run_id,
            "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
            "MLFLOW_EXPERIMENT_ID": run.info.experiment_id,
        }
        mlflow.set_tag("training.run_dir", config.run_dir)
    os.environ.update(env)
    final = launch_training(config, LaunchSpec.from_params(launcher))
    if (
        run is not None
    ):  # MLflow's atexit handler in the child marks the shared run FINISHED; undo that
        mlflow.MlflowClient().update_run(run.info.run_id, status="RUNNING")
    summary = json.loads((Path(final) / "summary.json").read_text())
    log.info("Training finished: %s", summary)
    return str(final), summary
