"""The project's `kedro run` (also `python -m uvit_pipeline`): Kedro's own command, except that

- `--params` is split at the commas between parameters only, so a list stays one value:
  `--params "generate.classes=[0,1,2],training.betas=[0.9,0.999]"`. Kedro 1.7 splits at every comma;
- the project's known errors (`uvit_pipeline.errors.UserFacingError`) end the run with one
  `Error: …` line; their traceback goes to the log file (info.log), and to the terminal as well with
  `--verbose` (or `UVIT_VERBOSE=1`). Any other exception shows its traceback as before.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from pathlib import Path
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run
from kedro.utils import find_kedro_project
from omegaconf import OmegaConf

from uvit_pipeline.errors import known_error, verbose
from uvit_pipeline.launch import LaunchSpec
from uvit_pipeline.machines import Coordinator, serve, spread_over_machines
from uvit_pipeline.pipeline_registry import unknown_pipeline_message

log = logging.getLogger(__name__)

_CLOSING = {"[": "]", "{": "}"}
PARAMS_HELP = (
    "Parameters of this run: section.key=value, comma-separated; a list in brackets "
    "(generate.classes=[0,1,2]). Every key is listed in docs/parameters.md."
)


def split_top_level(text: str) -> list[str]:
    """`text` split at the commas outside brackets, braces and quotes; items stripped, empty dropped."""
    items, current, stack, quote = [], [], [], None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in _CLOSING:
            stack.append(_CLOSING[char])
        elif stack and char == stack[-1]:
            stack.pop()
        elif char == "," and not stack:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def split_params(ctx: click.Context, param: click.Parameter, value: Any) -> dict[str, Any]:
    """`key=value,...` -> a nested dict; values are read as YAML (numbers, booleans, lists). A
    mapping (from a `--config` file) is returned as it is: the config loader expands dotted keys."""
    if isinstance(value, dict):
        return value
    dot_list = []
    for item in split_top_level(value or ""):
        key, equals, val = item.partition("=")
        if not equals or not key.strip():
            raise click.BadParameter(
                f"{item!r} must be key=value (a list in brackets: key=[a,b])", ctx, param
            )
        dot_list.append(f"{key.strip()}={val}")
    return OmegaConf.to_container(OmegaConf.from_dotlist(dot_list))


class KnownError(click.ClickException):
    """Printed by click as `Error: <message>`; exit status 1."""

    def __init__(self, message: str):
        super().__init__(message + "\n(traceback in info.log; `kedro run --verbose` prints it)")


def log_traceback_to_file(err: BaseException) -> None:
    """The full traceback of `err`, to the root logger's file handlers only (info.log)."""
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, "kedro run failed: %s", (err,), None
    )
    record.exc_info = (type(err), err, err.__traceback__)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _one_line_errors(callback):
    @functools.wraps(callback)
    def run(*args, verbose_errors: bool = False, **kwargs):
        if verbose_errors:
            os.environ["UVIT_VERBOSE"] = "1"
        names = list(kwargs.get("pipelines") or []) + [kwargs.get("pipeline") or ""]
        unknown = unknown_pipeline_message([n for n in names if n])
        if unknown:
            raise click.ClickException(unknown)
        try:
            try:  # bad launcher settings or a port in use: one line, before anything starts
                spec = _machines_spec(kwargs)
                coordinator = None
                if spec is not None and spec.machine_rank == 0:
                    coordinator = Coordinator(spec, _project_path() / "data").start()
            except ValueError as e:
                raise click.ClickException(str(e)) from None
            if spec is None:
                return callback(*args, **kwargs)
            if coordinator is None:
                _serve_as_worker(spec)
                return None
            with coordinator:
                # Every machine joins before the first node: a missing one fails the run now.
                coordinator.wait_for_workers("kedro run")
                return callback(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as err:
            known = known_error(err)
            if known is None or verbose():
                raise
            log_traceback_to_file(err)
            raise KnownError(str(known)) from None

    return run


def _project_path() -> Path:
    return find_kedro_project(Path.cwd()) or Path.cwd()


def _machines_spec(kwargs: dict) -> LaunchSpec | None:
    """The launch settings of a run over several plain machines (`launcher.num_machines` > 1,
    not `launcher.slurm`), else None. Read from the configuration only: no session, no hook and
    no MLflow run is opened here. Bad settings raise `ValueError` before anything starts."""
    from kedro.framework.project import settings

    project = _project_path()
    conf_source = kwargs.get("conf_source") or str(project / settings.CONF_SOURCE)
    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=conf_source,
        env=kwargs.get("env"),
        runtime_params=kwargs.get("params") or None,
        **settings.CONFIG_LOADER_ARGS,
    )
    launcher = dict(loader["parameters"].get("launcher") or {})
    if launcher.get("slurm") or (launcher.get("num_machines") or 1) <= 1:
        return None
    spec = LaunchSpec.from_params(launcher)
    return spec if spread_over_machines(spec) else None


def _serve_as_worker(spec: LaunchSpec) -> None:
    """Machine 1.. of a run over plain machines: no pipeline, no MLflow run; this machine's part
    of every launch machine 0 announces (docs/cluster.md, "Plain machines")."""
    log.info(
        "Machine %d of %d: serving machine 0 (%s); its kedro run runs the pipeline",
        spec.machine_rank,
        spec.num_machines,
        spec.main_process_ip,
    )
    serve(spec)


def _with_list_aware_params(command: click.Command) -> click.Command:
    run = copy.copy(command)
    run.params = [copy.copy(p) for p in command.params]
    for p in run.params:
        if p.name == "params":
            p.callback, p.help = split_params, PARAMS_HELP
    run.params.append(
        click.Option(
            ["--verbose", "verbose_errors"],
            is_flag=True,
            help="Print the full traceback of a known error (also: UVIT_VERBOSE=1); it is always "
            "in info.log.",
        )
    )
    run.callback = _one_line_errors(command.callback)
    return run


run = _with_list_aware_params(kedro_run)  # `find_run_command` (python -m uvit_pipeline) reads it


@click.group(name="uvit_pipeline")
def cli() -> None:
    """Project commands."""


cli.add_command(run, "run")
