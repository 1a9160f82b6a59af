"""The project's `kedro run` (also `python -m uvit_pipeline`): Kedro's own command, except that
`--params` is split at the commas between parameters only, so a list stays one value:
`--params "generate.classes=[0,1,2],training.betas=[0.9,0.999]"`. Kedro 1.7 splits at every comma.
"""

from __future__ import annotations

import copy
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run
from omegaconf import OmegaConf

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


def _with_list_aware_params(command: click.Command) -> click.Command:
    run = copy.copy(command)
    run.params = [copy.copy(p) for p in command.params]
    for p in run.params:
        if p.name == "params":
            p.callback, p.help = split_params, PARAMS_HELP
    return run


run = _with_list_aware_params(kedro_run)  # `find_run_command` (python -m uvit_pipeline) reads it


@click.group(name="uvit_pipeline")
def cli() -> None:
    """Project commands."""


cli.add_command(run, "run")
