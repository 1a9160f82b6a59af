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


def test_a_resumed_training_leaves_one_run_with_the_whole_curve_linked_to_the_first(tmp_path):
    """After a kill and a resume the MLflow store holds the crashed attempt's run (steps 1-2, the
    child logged them live) and the resumed one; once the checkpoint is saved, the resumed run
    holds every step and the two runs name each other."""
    import mlflow
    from kedro.io import DataCatalog, Version

    from uvit_pipeline.datasets import DirectoryDataset
    from uvit_pipeline.hooks import MlflowTracking

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        client = mlflow.MlflowClient()
        experiment = client.create_experiment("uvit_resume")
        with mlflow.start_run(experiment_id=experiment, run_name="demo · train_uvit") as first:
            for step in (1, 2):
                mlflow.log_metric("loss", 1.0 / step, step=step)
        client.set_terminated(first.info.run_id, "KILLED")
        final = tmp_path / "final"
        final.mkdir()
        (final / "metrics.jsonl").write_text("".join(record(s) for s in (1, 2, 3, 4)))
        entry = DirectoryDataset(
            filepath=str(tmp_path / "uvit_checkpoint"),
            version=Version(None, None),
            metadata={"mlflow": "tag", "mlflow_history": "metrics.jsonl"},
        )
        hook = MlflowTracking()
        hook.after_catalog_created(DataCatalog({"uvit_checkpoint": entry}))
        with mlflow.start_run(experiment_id=experiment, run_name="demo · train_uvit") as second:
            (final / "summary.json").write_text(
                json.dumps({"mlflow_run_ids": [first.info.run_id, second.info.run_id]})
            )
            entry.save(str(final))
            for step in (3, 4):  # what the resumed child logged live
                mlflow.log_metric("loss", 1.0 / step, step=step)
            hook.after_dataset_saved("uvit_checkpoint", str(final))
        runs = {r.info.run_id: r for r in client.search_runs([experiment])}
        curve = client.get_metric_history(second.info.run_id, "loss")
    finally:
        mlflow.set_tracking_uri(before)
    assert sorted(m.step for m in curve) == [1, 2, 3, 4]  # one run holds the whole curve
    old, new = runs[first.info.run_id], runs[second.info.run_id]
    assert old.data.tags["uvit.continued_in_run"] == second.info.run_id
    assert old.info.run_name == f"demo · train_uvit (resumed in {second.info.run_id[:8]})"
    assert new.data.tags["uvit.resumes_runs"] == first.info.run_id
    assert new.info.run_name == "demo · train_uvit"


def test_run_names_say_what_ran():
    from kedro.io import DataCatalog, MemoryDataset

    from uvit_pipeline.hooks import MlflowTracking

    def name(pipelines, prompts=(), classes=(), prompt_file=None):
        hook = MlflowTracking()
        hook._names = pipelines
        generate = {"prompts": list(prompts), "classes": list(classes)}
        hook.after_catalog_created(
            DataCatalog(
                {
                    "params:generate": MemoryDataset(generate),
                    "prompt_file": MemoryDataset(prompt_file),
                }
            )
        )
        return hook._what_ran()

    assert name(["__default__"]) == "full experiment"
    assert name(["train_uvit", "evaluation"]) == "train_uvit + evaluation"
    assert name(["generate"], prompts=["a", "b"], prompt_file=["c"] * 4) == "generate (6 prompts)"
    assert name(["generate"], classes=[3]) == "generate (1 class)"
    assert name(["generate"]) == "generate"
