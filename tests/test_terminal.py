"""What a `kedro` command prints: one plain line per record when piped, no per-entry load/save lines."""

import io
import logging
import os
from pathlib import Path

import yaml
from kedro.logging import RichHandler

from uvit_pipeline.warning_filters import plain_console_when_piped

ROOT = Path(__file__).resolve().parents[1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _swap_root_handlers(handlers):
    root = logging.getLogger()
    saved = list(root.handlers)
    for h in saved:
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    return root, saved


def test_piped_output_gets_one_plain_line_per_record():
    stream = io.StringIO()
    root, saved = _swap_root_handlers([RichHandler()])
    try:
        plain_console_when_piped(stream)
        assert not any(isinstance(h, RichHandler) for h in root.handlers)
        long = "x" * 300  # Rich would wrap this at 80 columns
        logging.getLogger("uvit_pipeline.test").warning("a long message %s", long)
    finally:
        _swap_root_handlers(saved)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith(long) and "WARNING" in lines[0]


def test_terminal_keeps_rich():
    handler = RichHandler()
    root, saved = _swap_root_handlers([handler])
    try:
        plain_console_when_piped(_Terminal())
        assert root.handlers == [handler]
    finally:
        _swap_root_handlers(saved)


def test_logging_config_hides_per_entry_load_and_save_lines():
    config = yaml.safe_load((ROOT / "conf" / "logging.yml").read_text())
    assert config["loggers"]["kedro.io.data_catalog"]["level"] == "WARNING"
    assert config["loggers"]["uvit_pipeline"]["level"] == "INFO"


def test_start_up_lines_stay_in_the_log_file_only(tmp_path):
    """ "Kedro project …" and kedro-mlflow's resolver line open every run and say nothing about it:
    the console drops them, the log file keeps them; the run's own lines still show."""
    from uvit_pipeline.warning_filters import errors_once_on_console

    console, log_file = io.StringIO(), tmp_path / "info.log"
    file_handler = logging.FileHandler(log_file)
    root, saved = _swap_root_handlers([logging.StreamHandler(console), file_handler])
    level = root.level
    root.setLevel(logging.INFO)
    try:
        errors_once_on_console()
        # as Kedro 1.7's KedroSession.run and kedro-mlflow's MlflowHook log them
        logging.getLogger("kedro.framework.session.session").info("Kedro project %s", "uvit")
        logging.getLogger("kedro_mlflow.framework.hooks.mlflow_hook").info(
            r"Registering new custom resolver: 'km.random_name'"
        )
        logging.getLogger("kedro.runner.sequential_runner").info("Running node: %s", "train_uvit")
    finally:
        root.setLevel(level)
        _swap_root_handlers(saved)
        file_handler.close()
    assert console.getvalue().splitlines() == ["Running node: train_uvit"]
    kept = log_file.read_text()
    assert "Kedro project uvit" in kept and "Registering new custom resolver" in kept


def test_mlflow_model_logging_notes_are_dropped(monkeypatch):
    """MLflow's pickling caution (printed at every generator logging, through MLflow's own handler)
    is dropped, other mlflow.pyfunc records pass, and its artifact progress bar is off."""
    from uvit_pipeline.warning_filters import quiet_mlflow_model_logging

    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    logger = logging.getLogger("mlflow.pyfunc")
    monkeypatch.setattr(logger, "filters", [])
    quiet_mlflow_model_logging()
    note = logger.makeRecord(
        logger.name,
        logging.WARNING,
        __file__,
        0,
        "Passing a Python object as `python_model` x",
        (),
        None,
    )
    other = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, "something else", (), None)
    assert not logger.filter(note) and logger.filter(other)
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
