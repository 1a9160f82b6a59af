"""The metrics log survives a torn write (docs/reliability.md, case 23): a torn tail is cut when the
log is reopened for appending, and readers skip what does not parse, keeping every complete record."""

from __future__ import annotations

import json
import logging

from uvit_pipeline.pipelines.train_uvit.nodes import loss_curve
from uvit_pipeline.training.monitor import JsonlWriter, read_jsonl, repair_jsonl


def record(step: int) -> str:
    return json.dumps({"time": 1.0, "step": step, "loss": 1.0 / step, "lr": 1e-4}) + "\n"


def test_a_torn_tail_is_cut_before_appending(tmp_path, caplog):
    log = tmp_path / "metrics.jsonl"
    log.write_text(record(1) + record(2) + '{"time": 1.0, "step": 3, "lo')  # a full disk
    with caplog.at_level(logging.WARNING):
        writer = JsonlWriter(log)
    assert "torn record" in caplog.text and str(log) in caplog.text
    writer.write({"step": 3, "loss": 0.3, "lr": 1e-4})
    writer.close()
    assert [r["step"] for r in map(json.loads, log.read_text().splitlines())] == [1, 2, 3]


def test_a_last_line_that_does_not_parse_is_cut(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_bytes(record(1).encode() + b"\x00\x00\x00\x00\n")  # a power cut's zero block
    assert repair_jsonl(log) == 5
    assert log.read_text() == record(1)
    assert repair_jsonl(log) == 0  # an intact log is left alone


def test_a_record_glued_onto_a_torn_line_is_read(tmp_path, caplog):
    """What an older release left: a resumed run appended after the torn line."""
    log = tmp_path / "metrics.jsonl"
    log.write_text(
        record(1) + '{"time": 1.0, "step": 2, "lo' + record(3) + "not json\n" + record(4)
    )
    with caplog.at_level(logging.WARNING):
        rows = read_jsonl(log)
    assert [r["step"] for r in rows] == [1, 3, 4]
    assert "lines 2, 3" in caplog.text and str(log) in caplog.text
    assert loss_curve(tmp_path).size[0] > 0  # the loss curve sees every complete record


def test_mlflow_gets_every_complete_record_of_a_resumed_training(tmp_path):
    """The child logs only the steps of this run live; the records of the run before the crash
    are logged from the exported metrics.jsonl when `uvit_checkpoint` is saved."""
    import mlflow
    from kedro.io import DataCatalog, Version

    from uvit_pipeline.datasets import DirectoryDataset
    from uvit_pipeline.hooks import MlflowTracking

    final = tmp_path / "final"
    final.mkdir()
    (final / "metrics.jsonl").write_text(record(1) + record(2) + '{"step": 3, "lo\n' + record(4))
    entry = DirectoryDataset(
        filepath=str(tmp_path / "uvit_checkpoint"),
        version=Version(None, None),
        metadata={"mlflow": "tag", "mlflow_history": "metrics.jsonl"},
    )
    entry.save(str(final))
    hook = MlflowTracking()
    hook.after_catalog_created(DataCatalog({"uvit_checkpoint": entry}))
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.MlflowClient().create_experiment("uvit_history")  # its own store
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_metric("loss", 0.25, step=4)  # what the resumed child logged live
            hook.after_dataset_saved("uvit_checkpoint", str(final))
            history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
    finally:
        mlflow.set_tracking_uri(before)
    assert sorted(m.step for m in history) == [1, 2, 4]
