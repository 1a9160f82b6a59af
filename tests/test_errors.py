"""Known errors end `kedro run` with one `Error: …` line saying what to do; advice replaces internals
(unknown pipeline, missing checkpoint or raw data, `device: cuda` without CUDA)."""

from __future__ import annotations

import logging
import signal

import click
import pytest
from kedro.io import DataCatalog, DatasetError, MemoryDataset, Version
from kedro.pipeline import Pipeline, node

from uvit_pipeline import devices
from uvit_pipeline.cli import KnownError, _one_line_errors, run
from uvit_pipeline.data.sources import SOURCES, scan
from uvit_pipeline.datasets.directory import (
    DirectoryDataset,
    MissingArtefact,
    RawDirectoryDataset,
)
from uvit_pipeline.errors import MissingInput, UserFacingError, known_error
from uvit_pipeline.hooks import MissingInputs
from uvit_pipeline.launch import exit_description, last_lines
from uvit_pipeline.pipeline_registry import known_pipelines, unknown_pipeline_message
from uvit_pipeline.pipelines.params import ParameterError, validate_all
from uvit_pipeline.warning_filters import _ErrorsOnce

from .pipelines.conftest import load_params


def _failing(err: Exception):
    def callback(**kwargs):
        raise err

    return _one_line_errors(callback)


def _wrapped_known() -> DatasetError:
    try:
        try:
            raise MissingInput("raw data not found at /x: expected /x/train/<class>/*.JPEG")
        except MissingInput as inner:
            raise DatasetError("Failed while loading data from dataset raw_images") from inner
    except DatasetError as outer:
        return outer


def test_known_error_is_found_behind_kedros_wrapper():
    err = _wrapped_known()
    assert isinstance(known_error(err), MissingInput)
    assert known_error(DatasetError("plain")) is None
    try:
        try:
            raise MissingInput("known")
        except MissingInput:
            raise TypeError("a bug while handling it") from None
    except TypeError as bug:
        assert known_error(bug) is None


def test_known_error_becomes_one_error_line_and_its_traceback_goes_to_the_log_file(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("UVIT_VERBOSE", raising=False)
    log_file = tmp_path / "info.log"
    handler = logging.FileHandler(log_file)
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(KnownError) as caught:
            _failing(_wrapped_known())()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    message = caught.value.format_message()
    assert message.startswith("raw data not found at /x")
    assert "Traceback" not in message and "DatasetError" not in message
    assert "--verbose" in message
    assert "Traceback (most recent call last)" in log_file.read_text()


def test_verbose_switch_and_unknown_errors_keep_the_traceback(monkeypatch):
    monkeypatch.setenv("UVIT_VERBOSE", "1")
    with pytest.raises(DatasetError):
        _failing(_wrapped_known())()
    monkeypatch.delenv("UVIT_VERBOSE")
    with pytest.raises(ZeroDivisionError):
        _failing(ZeroDivisionError("a bug"))()


def test_run_command_has_a_documented_verbose_flag():
    option = next(p for p in run.params if p.name == "verbose_errors")
    assert "--verbose" in option.opts and "UVIT_VERBOSE" in option.help


def test_project_errors_are_user_facing():
    from uvit_pipeline._io import LockedError
    from uvit_pipeline.datasets.guard import DamagedVersion

    assert issubclass(LockedError, UserFacingError) and issubclass(LockedError, RuntimeError)
    assert issubclass(DamagedVersion, UserFacingError) and issubclass(DamagedVersion, DatasetError)
    assert issubclass(ParameterError, click.ClickException)


def test_unknown_pipeline_names_the_closest_and_lists_all():
    message = unknown_pipeline_message(["trainig"])
    assert "'train_uvit'" in message and "did you mean" in message
    assert all(name in message for name in known_pipelines())
    assert unknown_pipeline_message(["train_uvit", "__default__"]) is None
    with pytest.raises(click.ClickException, match="did you mean 'train_uvit'"):
        _failing(AssertionError("not reached"))(pipelines=["trainig"])


def test_crashed_child_shows_final_progress_state_and_explains_kill():
    tail = ["step 1\n", "train:  10%|#  \rtrain:  50%|#####  \rtrain:  90%|######### \r\n", "\n"]
    assert last_lines(tail) == ["step 1", "train:  90%|#########"]
    for rc in (-signal.SIGKILL, 137):
        assert "out-of-memory" in exit_description(rc) and str(rc) in exit_description(rc)
    assert exit_description(1) == "exited with code 1"


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_missing_raw_data_shows_the_expected_layout(tmp_path, source):
    with pytest.raises(MissingInput) as caught:
        scan(source, tmp_path / "absent", "train", workers=1)
    layout = SOURCES[source].layout.replace("<root>", str(tmp_path / "absent"))
    assert layout and layout in str(caught.value)


def test_missing_checkpoint_names_the_pipelines_that_make_it(tmp_path):
    dataset = DirectoryDataset(
        filepath=str(tmp_path / "uvit_checkpoint"),
        made_by=["train_uvit", "import_pretrained"],
        version=Version(None, None),
    )
    with pytest.raises(MissingArtefact) as caught:
        dataset.load()
    text = str(caught.value)
    assert "kedro run --pipelines train_uvit" in text and "import_pretrained" in text
    assert "DirectoryDataset(" not in text


def _consumer(checkpoint):
    return checkpoint


def test_missing_inputs_are_refused_before_the_run(tmp_path):
    catalog = DataCatalog(
        {
            "uvit_checkpoint": DirectoryDataset(
                filepath=str(tmp_path / "ckpt"), made_by=["train_uvit"], version=Version(None, None)
            ),
            "out": MemoryDataset(),
        }
    )
    pipeline = Pipeline([node(_consumer, "uvit_checkpoint", "out")])
    with pytest.raises(MissingArtefact, match="kedro run --pipelines train_uvit"):
        MissingInputs().before_pipeline_run(pipeline, catalog)
    # an input the same pipeline makes is not a free input
    made = Pipeline([node(lambda: "x", None, "uvit_checkpoint", name="make"), *pipeline.nodes])
    MissingInputs().before_pipeline_run(made, catalog)


def test_missing_raw_folder_is_refused_with_its_layout(tmp_path):
    catalog = DataCatalog(
        {
            "raw_images": RawDirectoryDataset(filepath=str(tmp_path / "cifar")),
            "params:ingestion": MemoryDataset({"source": "cifar10"}),
            "out": MemoryDataset(),
        }
    )
    pipeline = Pipeline([node(_consumer, "raw_images", "out")])
    with pytest.raises(MissingArtefact, match="cifar-10-batches-py"):
        MissingInputs().before_pipeline_run(pipeline, catalog)


def test_device_auto_resolves_once(monkeypatch, caplog):
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr(devices, "_logged", set())
    params = {
        "features": {"device": "auto"},
        "generate": {"device": "auto"},
        "x": {"device": "auto"},
    }
    with caplog.at_level(logging.INFO, logger="uvit_pipeline.devices"):
        devices.resolve_devices(params)
    assert params["features"]["device"] == params["generate"]["device"] == "cpu"
    assert params["x"]["device"] == "auto"  # not a torch-in-process section
    assert sum("device auto" in r.getMessage() for r in caplog.records) == 1


def test_base_defaults_to_auto():
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[1] / "conf" / "base"
    for section in ("features", "text", "evaluation"):
        text = (conf / f"parameters_{section}.yml").read_text()
        assert yaml.safe_load(text)[section]["device"] == "auto"


def test_explicit_cuda_without_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    params = load_params("demo")
    validate_all(params)  # the demo says cpu
    params["generate"]["device"] = "cuda"
    with pytest.raises(
        ParameterError, match=r"generate\.device=cuda.*no CUDA.*generate\.device=auto"
    ):
        validate_all(params)
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    validate_all(params)


def test_node_failure_line_hidden_on_console_and_mlflow_close_once():
    console = _ErrorsOnce()

    def record(name, msg):
        return logging.LogRecord(name, logging.ERROR, __file__, 0, msg, None, None)

    assert not console.filter(record("kedro.pipeline.node", "Node %s failed with error: \n%s"))
    closed = "The run 'abc' was closed because of an error in the pipeline."
    assert console.filter(record("kedro_mlflow", closed))
    assert not console.filter(record("kedro_mlflow", closed))
    assert console.filter(record("uvit_pipeline", "anything else"))
    assert not console.filter(record("kedro.runner.runner", "Completed %d out of %d tasks"))
    assert console.filter(record("kedro.runner.runner", "There are 3 nodes that have not run."))


def test_training_eta_is_steady_over_a_long_window():
    from uvit_pipeline.training.loop import SteadyEta

    eta = SteadyEta(n_steps=1000, start_step=0, t0=0.0)  # window: the last 200 steps
    t, estimates = 0.0, []
    for step in range(25, 1000, 25):
        t += 25 * (5.0 if step % 100 == 0 else 1.0)  # a slow interval every 100 steps (a save)
        estimates.append(eta.update(step, t))
    late = estimates[10:]
    # a last-interval rate would swing 5x; the windowed average moves by less than a third
    ratios = [b / a for a, b in zip(late, late[1:], strict=False) if b > 0]
    assert all(0.5 < r < 1.0 for r in ratios[:-1])
    assert eta.points[0][1] >= 1000 - 25 - 200 - 25


def test_demo_prompts_sharing_no_caption_word_are_flagged():
    from uvit_pipeline.data.demo import caption_vocabulary, unknown_to_demo

    assert {"red", "circle", "large", "medium", "left"} <= caption_vocabulary()
    assert not unknown_to_demo("a large red circle")
    assert not unknown_to_demo("Medium-sized cyan diamond")
    assert unknown_to_demo("a photo of a dog")


def test_mlflow_run_url():
    from uvit_pipeline.hooks import mlflow_run_url

    assert (
        mlflow_run_url("3", "abc", "sqlite:///x/mlflow.db")
        == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    )
    assert (
        mlflow_run_url("3", "abc", "http://host:8080/")
        == "http://host:8080/#/experiments/3/runs/abc"
    )


def test_run_summary_lists_metrics_files_and_the_run(tmp_path, caplog, monkeypatch):
    import mlflow
    from kedro_datasets.json import JSONDataset

    from uvit_pipeline.hooks import RunSummary

    monkeypatch.setattr(mlflow, "active_run", lambda: None)
    metrics = JSONDataset(filepath=str(tmp_path / "m.json"), metadata={"mlflow": "metrics"})
    images = DirectoryDataset(filepath=str(tmp_path / "images"), version=Version(None, None))
    catalog = DataCatalog({"evaluation_metrics": metrics, "generated_images": images})
    summary = RunSummary()
    summary.after_catalog_created(catalog)
    summary.before_pipeline_run()
    summary.before_node_run()
    metrics.save({"fid": 12.345, "n": 500})
    staged = tmp_path / "staged"
    staged.mkdir()
    images.save(str(staged))
    summary._run = ("1", "r1")
    with caplog.at_level(logging.INFO, logger="uvit_pipeline.hooks"):
        summary.after_dataset_saved("evaluation_metrics", {"fid": 12.345, "n": 500})
        summary.after_dataset_saved("generated_images", str(staged))
        summary.after_pipeline_run()
    text = "\n".join(r.getMessage() for r in caplog.records)
    final = images._get_load_path().as_posix()
    assert f"Images saved to {final}" in text and str(staged) not in text
    assert "fid 12.35" in text and "#/experiments/1/runs/r1" in text
