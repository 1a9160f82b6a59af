"""Terminal set-up for every `kedro` command (the `kedro.init` entry point in pyproject.toml, run before
plugins load): known third-party warnings filtered precisely (any other warning still shows; settings.py
installs the same filters for sessions created from Python), and one plain line per log record when
output is not a terminal."""

import logging
import os
import re
import sys
import warnings

KNOWN = (
    # OmegaConf deprecates the API Kedro's config loader calls; nothing for users to change.
    r"register_new_resolver\(\) is deprecated",
    # MLflow's hint about kedro-mlflow's own model class, which this project does not use.
    r"Add type hints to the `predict` method",
    # MLflow's advice to log an input example: the generator's signature is explicit
    # (serving._signature) and an example would run a sampling at every logging.
    r"An input example was not provided when logging the model",
)
_PATTERN = re.compile("|".join(KNOWN))


class _KnownWarnings(logging.Filter):
    """Drops the known warnings where Kedro routes warnings to logging (logger `py.warnings`);
    MLflow raises its hint under its own `simplefilter("once")`, which a warnings filter cannot stop."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _PATTERN.search(record.getMessage())


# Lines hidden on the console, by logger (name prefix) and message (prefix of the format string):
# the runner's bookkeeping ("Running node: …" already marks each stage), and start-up lines that are
# the same in every run (the project's name, kedro-mlflow registering its `km.random_name` resolver).
_CONSOLE_HIDDEN = {
    "kedro.runner": (
        "Completed node: %s",
        "Completed %d out of %d tasks",
        "Using synchronous mode",
    ),
    "kedro.framework.session": ("Kedro project %s",),
    "kedro_mlflow.framework.hooks": ("Registering new custom resolver",),
}


class _MlflowModelNotes(logging.Filter):
    """MLflow's caution about pickled model objects, which it prints through its own handler at
    every model logging: the generator's class holds no state (its weights travel as artifacts,
    serving.log_generator), so the line says nothing about this project's models."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Passing a Python object as `python_model`")


def quiet_mlflow_model_logging() -> None:
    logging.getLogger("mlflow.pyfunc").addFilter(_MlflowModelNotes())
    # The progress bar of MLflow's artifact copies (a model's dozen small files, at each logging).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class _ErrorsOnce(logging.Filter):
    """Console only: Kedro's "Node … failed with error: <message>" (the run's end prints the error
    once: `Error: …` for a known one, the traceback otherwise; the node is named by
    `hooks.NameFailedNode`), kedro-mlflow's "run … was closed because of an error" after its first
    time, the runner's per-node bookkeeping and the start-up lines of every run (`_CONSOLE_HIDDEN`).
    The log file keeps every record."""

    def __init__(self) -> None:
        super().__init__()
        self._closed_seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "kedro.pipeline.node" and "failed with error" in str(record.msg):
            return False
        for logger, messages in _CONSOLE_HIDDEN.items():
            if record.name.startswith(logger) and str(record.msg).startswith(messages):
                return False
        if "was closed because of an error" in str(record.msg):
            seen, self._closed_seen = self._closed_seen, True
            return not seen
        return True


def errors_once_on_console() -> None:
    """`_ErrorsOnce` on the root logger's console handlers (not its file handlers)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            continue
        if not any(isinstance(f, _ErrorsOnce) for f in handler.filters):
            handler.addFilter(_ErrorsOnce())


PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


def filter_known_warnings() -> None:
    for message in KNOWN:
        warnings.filterwarnings("ignore", f".*{message}", UserWarning)
    logger = logging.getLogger("py.warnings")
    if not any(isinstance(f, _KnownWarnings) for f in logger.filters):
        logger.addFilter(_KnownWarnings())


def plain_console_when_piped(stream=None) -> None:
    """Replace the root logger's Rich console handler by a one-line plain handler when `stream`
    (stdout) is not a terminal: Rich lays records out for 80 columns there (a scheduler's log file, CI,
    `| tee`), which splits one record over several lines. conf/logging.yml keeps Rich for terminals;
    Kedro allows only `logging`/`kedro.logging` handler classes in that file, hence this swap."""
    from rich.logging import RichHandler  # Kedro's console handler derives from it

    stream = stream or sys.stdout
    if stream.isatty():
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, RichHandler):
            plain = logging.StreamHandler(stream)
            plain.setLevel(handler.level)
            plain.setFormatter(logging.Formatter(PLAIN_FORMAT, datefmt="%H:%M:%S"))
            plain.filters = list(handler.filters)
            root.removeHandler(handler)
            root.addHandler(plain)


def install() -> None:
    filter_known_warnings()
    quiet_mlflow_model_logging()
    plain_console_when_piped()
    errors_once_on_console()
