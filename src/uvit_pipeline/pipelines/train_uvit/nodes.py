"""Nodes of the `train_uvit` pipeline: resolve the config, launch `accelerate launch`, return the checkpoint."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from PIL import Image

from uvit_pipeline._io import atomic_write_text, read_json, write_checksums
from uvit_pipeline.fields import not_identity
from uvit_pipeline.launch import LaunchSpec
from uvit_pipeline.pipelines._figures import figure_image, new_figure
from uvit_pipeline.pipelines._staging import hold_for_run, identity_key
from uvit_pipeline.training import TrainConfig, launch_training
from uvit_pipeline.training.monitor import read_jsonl

log = logging.getLogger(__name__)
# Settings that do not change what is trained (declared `identity=False` on `TrainConfig`, n_steps
# among them): a rerun that differs only in these resumes the same run.
_NOT_IDENTITY = not_identity(TrainConfig)


def expected_store_meta(features: dict) -> dict:
    """What the feature store must have been built with for this experiment (checked before training)."""
    meta = {
        "kind": features["kind"],
        "resolution": features["resolution"],
        "crop": features["crop"],
    }
    if features["kind"] == "latent_moments":  # another scale factor is another latent space
        meta["scale_factor"] = features["scale_factor"]
    return meta


def store_identity(store_path: str) -> str:
    """The feature store's content identity (its `content_id`, else a hash of its meta)."""
    meta_file = Path(store_path) / "meta.json"
    if not meta_file.is_file():
        return store_path
    meta = read_json(meta_file, f"Delete the feature store {store_path} and re-run features")
    return meta.get("content_id") or identity_key(meta)


def make_train_config(
    model: dict,
    training: dict,
    launcher: dict,
    features: dict,
    store_path: str,
    run_root: str,
    text_path: str | None = None,
) -> TrainConfig:
    """Parameters -> TrainConfig (validated by `params.validate_all` before any node runs, and by the
    training child). The run directory is keyed by everything that changes what is trained, the
    feature store's content included: re-running the same experiment on the same data resumes from
    its newest complete training state (a larger `training.n_steps` continues it); other data or
    settings start a new run."""
    cfg = dict(training)
    cfg["model"] = dict(model)
    cfg["data"] = {
        **(training.get("data") or {}),
        "path": store_path,
        "kind": features["kind"],
        "scale_factor": features["scale_factor"],
        "expected_meta": expected_store_meta(features),
        "text_path": text_path or "",
    }
    cfg["cpu"] = bool(launcher.get("cpu", False))
    content = store_identity(store_path)
    if Path(store_path, "meta.json").is_file():
        cfg["data"]["content_id"] = content  # training refuses a store with other content
    config = TrainConfig.from_dict(cfg)
    identity = {k: v for k, v in config.to_dict().items() if k not in _NOT_IDENTITY}
    identity["data"] = {
        **identity["data"],
        "path": content,
        "text_path": store_identity(text_path) if text_path else None,
    }
    return dataclasses.replace(config, run_dir=str(Path(run_root) / identity_key(identity)[:12]))


def loss_curve(run_dir: Path) -> Image.Image:
    """The run's loss (log scale) and learning rate against the step, from `metrics.jsonl`."""
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if {"step", "loss", "lr"} <= set(r)]
    steps = [r["step"] for r in rows]
    fig, ax = new_figure(7, 4)
    ax.plot(steps, [r["loss"] for r in rows], color="tab:blue", label="loss")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (ε-prediction MSE)", color="tab:blue")
    lr = ax.twinx()
    lr.plot(steps, [r["lr"] for r in rows], color="tab:orange", label="learning rate")
    lr.set_ylabel("learning rate", color="tab:orange")
    ax.set_title(f"Training loss, {len(rows)} logged points")
    return figure_image(fig)


def train_uvit(
    image_features: str | None,
    text_features: str | None,
    model: dict,
    training: dict,
    launcher: dict,
    features: dict,
    paths: dict,
) -> tuple[str, dict, Image.Image]:
    """Train in a child `accelerate launch` process; returns the final checkpoint directory, a
    summary and the loss curve. Text-to-image models also read the caption features."""
    if image_features is None:
        raise ValueError("image_features does not exist yet: run the features pipeline first")
    config = make_train_config(
        model,
        training,
        launcher,
        features,
        image_features,
        run_root=paths["train_state"],
        text_path=text_features,
    )
    spec = LaunchSpec.from_params({k: v for k, v in launcher.items() if k != "cpu"}, cpu=config.cpu)
    # Held until the Kedro run ends: the child's training, this post-processing of final/ and its
    # move into the catalog. A second identical training is refused here, naming this one.
    hold_for_run(config.run_dir, "training run")
    final = launch_training(config, spec)
    summary = read_json(final / "summary.json")
    summary["run_dir"] = config.run_dir
    # The checkpoint carries its own training curve (the run report and notebooks read it there).
    curve = loss_curve(Path(config.run_dir))
    curve.save(final / "loss_curve.png")
    # The export carries the complete records only (a torn line of a crashed run is left behind).
    records = read_jsonl(Path(config.run_dir) / "metrics.jsonl")
    atomic_write_text(final / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    summary["logged_records"] = len(records)
    write_checksums(final)  # the export's checksums now cover the curve and the log too
    return str(final), summary, curve
