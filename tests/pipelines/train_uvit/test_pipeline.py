"""`training`: a tiny run through the pipeline: checkpoint, summary, loss curve; data-aware identity."""

import json
from pathlib import Path

from uvit_pipeline.pipelines.train_uvit.nodes import make_train_config
from uvit_pipeline.training import load_uvit_from_checkpoint


def test_checkpoint_summary_and_curve(demo_chain):
    ckpt = Path(demo_chain["uvit_checkpoint"])
    assert {
        "nnet_ema.safetensors",
        "nnet.safetensors",
        "config.json",
        "loss_curve.png",
        "metrics.jsonl",
    } <= {p.name for p in ckpt.iterdir()}
    model = load_uvit_from_checkpoint(ckpt)
    assert model.num_classes == 11
    summary = demo_chain["training_summary"]
    assert summary["steps"] == 6 and summary["final_loss"] > 0
    assert demo_chain["loss_curve"].size[0] > 300  # a rendered figure, not a placeholder
    losses = [json.loads(x)["loss"] for x in (ckpt / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3


def test_run_identity_follows_the_data(demo_chain, demo_params, tmp_path):
    p = demo_params
    args = (p["model"], p["training"], p["launcher"], p["features"])
    store = demo_chain["image_features"]
    same = make_train_config(*args, store, str(tmp_path)).run_dir
    assert make_train_config(*args, store, str(tmp_path)).run_dir == same
    other = tmp_path / "other-store"
    other.mkdir()
    meta = json.loads((Path(store) / "meta.json").read_text())
    meta["content_id"] = "a-different-data-set"
    (other / "meta.json").write_text(json.dumps(meta))
    assert make_train_config(*args, str(other), str(tmp_path)).run_dir != same
    # logging settings do not start a new run
    quieter = {**p["training"], "log_interval": 5}
    assert make_train_config(p["model"], quieter, *args[2:], store, str(tmp_path)).run_dir == same


def test_n_steps_is_not_part_of_the_run(demo_params, tmp_path):
    """A larger `training.n_steps` resumes the same run directory (docs/training.md)."""
    p = demo_params
    args = (p["model"], p["training"], p["launcher"], p["features"], "/store", str(tmp_path))
    longer = {**p["training"], "n_steps": 10 * p["training"]["n_steps"]}
    run_dir = make_train_config(*args).run_dir
    assert make_train_config(p["model"], longer, *args[2:]).run_dir == run_dir
    other_lr = {**p["training"], "lr": 2 * p["training"]["lr"]}
    assert make_train_config(p["model"], other_lr, *args[2:]).run_dir != run_dir
