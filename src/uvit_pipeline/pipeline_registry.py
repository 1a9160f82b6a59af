"""Project pipelines: one per folder in `pipelines/`, fitted to the active environment.

`__default__` is the experiment of the active environment: the stages listed under `pipelines` in its
`globals.yml` (for the demo: the generator, then ingestion to evaluation; for a paper experiment:
ingestion to evaluation, never the demo generator).

Inputs an environment does not have (its `NotUsed` catalog entries: no text encoder for a class
model, no official statistics in the demo) and `run_overrides` (this run's `--params`, for the run
report) are not datasets of its DAG: every registered pipeline takes them out of its nodes' inputs and
hands the node their value itself (None for a placeholder), so kedro-viz and `kedro registry describe`
show only real inputs while each node still receives every argument.

Kedro builds the registry before it knows the environment, so `hooks.ExperimentPipelines` calls
`use_environment` when the Kedro context is created; until then (e.g. `kedro viz run`, which runs no
project hooks) the registry reads the default environment's configuration itself.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# conf/demo/globals.yml `pipelines` (tests/pipelines/test_project.py keeps the two equal)
DEMO_STAGES = (
    "demo_data", "ingestion", "demo_autoencoder", "features", "fid_reference", "train_uvit", "evaluation",
    "serving",
)  # fmt: skip

# The input of the run report that holds this run's `--params` (a value of the run, not a dataset).
RUN_OVERRIDES = "run_overrides"


class Environment:
    """What the registry builds for; changed only through `use_environment`. `fixed` is None until
    an environment is given (then `register_pipelines` reads the default environment's files)."""

    stages: tuple[str, ...] = DEMO_STAGES
    fixed: dict[str, Any] | None = None


def placeholders(catalog_config: Mapping[str, Any]) -> list[str]:
    """The catalog entries of `catalog_config` (a config loader's resolved "catalog") whose type is
    `datasets.NotUsed`: inputs this environment does not have."""
    from kedro.utils import load_obj

    from uvit_pipeline.datasets import NotUsed

    names = []
    for name, entry in catalog_config.items():
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        # only this package defines a NotUsed: other types are not imported here
        if isinstance(kind, str) and kind.startswith("uvit_pipeline."):
            cls = load_obj(kind)
            if isinstance(cls, type) and issubclass(cls, NotUsed):
                names.append(name)
    return sorted(names)


def fixed_inputs(config_loader) -> dict[str, Any]:
    """The inputs taken out of an environment's DAG, with the value each node is given instead: None
    for its placeholders, and the run's `--params` for `run_overrides`."""
    fixed: dict[str, Any] = dict.fromkeys(placeholders(config_loader["catalog"]))
    fixed[RUN_OVERRIDES] = dict(config_loader.runtime_params or {})
    return fixed


def use_environment(stages, fixed: Mapping[str, Any]) -> bool:
    """Build for an environment: `stages` (a globals.yml `pipelines` list; None = the demo's) become
    `__default__`, and the inputs in `fixed` (`fixed_inputs`) leave every node's inputs.

    Returns True when something changed: the caller then rebuilds the registry."""
    stages = tuple(stages or DEMO_STAGES)
    if not all(isinstance(s, str) for s in stages):
        raise ValueError(f"globals.pipelines must be a list of pipeline names, got {stages!r}")
    fixed = dict(fixed)
    changed = stages != Environment.stages or fixed != Environment.fixed
    Environment.stages, Environment.fixed = stages, fixed
    return changed


def with_fixed_inputs(func: Callable, args: Mapping[int, Any], kwargs: Mapping[str, Any]):
    """`func` with some of its inputs given as fixed values: list inputs by position (`args`:
    {position: value}), dict inputs by keyword (`kwargs`). A plain function, so that kedro-viz shows
    `func`'s code (it reads `__wrapped__`); its signature and annotations are `func`'s less the fixed
    arguments (what Kedro binds the node's inputs and its typed-parameter check to). Like any
    closure it does not pickle: Kedro's ParallelRunner names such nodes and refuses to start."""
    fixed_args, fixed_kwargs = sorted(args.items()), dict(kwargs)

    def call(*given, **named):
        full = list(given)
        for position, value in fixed_args:  # ascending: each lands at its final place
            full.insert(position, value)
        return func(*full, **named, **fixed_kwargs)

    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        if hasattr(func, attr):
            setattr(call, attr, getattr(func, attr))
    call.__wrapped__ = func
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # nothing to narrow: Kedro binds to `*given, **named`
        return call
    if all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
        gone = {params[i].name for i, _ in fixed_args if i < len(params)} | set(fixed_kwargs)
        call.__signature__ = inspect.Signature([p for p in params if p.name not in gone])
        annotations = getattr(func, "__annotations__", {})
        call.__annotations__ = {k: v for k, v in annotations.items() if k not in gone}
    return call


def without_inputs(pipeline: Pipeline, fixed: Mapping[str, Any]) -> Pipeline:
    """`pipeline` with the datasets in `fixed` taken out of its nodes' inputs; each node that read
    one receives its value from `fixed` instead. Names, outputs, tags and namespaces stay the same."""
    nodes = []
    for node in pipeline.nodes:
        inputs = node._inputs  # as written in pipeline.py: None, a name, a list or a dict
        if isinstance(inputs, dict):
            args = {}
            kwargs = {k: fixed[v] for k, v in inputs.items() if v in fixed}
            kept: Any = {k: v for k, v in inputs.items() if v not in fixed}
        else:
            names = [inputs] if isinstance(inputs, str) else list(inputs or [])
            args, kwargs = {i: fixed[v] for i, v in enumerate(names) if v in fixed}, {}
            kept = [v for v in names if v not in fixed]
        if args or kwargs:
            node = node._copy(  # Node's own copy: outputs (list or dict), tags, confirms kept
                func=with_fixed_inputs(node.func, args, kwargs),
                inputs=kept or None,
                name=node._name or node._set_unique_name(),  # an unnamed node keeps its name
            )
        nodes.append(node)
    return Pipeline(nodes)


def _default_environment() -> None:
    """`use_environment` for the environment a plain `kedro run` would use ($KEDRO_ENV, else
    settings' `default_run_env`), read from the project's files: for a registry read without the
    project hooks (kedro-viz). Outside a project, the demo's stages and nothing fixed."""
    from kedro.framework.project import settings
    from kedro.utils import find_kedro_project

    project = find_kedro_project(Path.cwd())
    conf = Path(project or ".") / settings.CONF_SOURCE
    if project is None or not conf.is_dir():
        use_environment(DEMO_STAGES, {})
        return
    args = dict(settings.CONFIG_LOADER_ARGS)
    env = os.environ.get("KEDRO_ENV") or args.get("default_run_env")
    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(conf), env=env, **args)
    use_environment(loader["globals"].get("pipelines"), fixed_inputs(loader))


def register_pipelines() -> dict[str, Pipeline]:
    if Environment.fixed is None:
        _default_environment()
    fixed = Environment.fixed or {}
    pipelines = {
        name: without_inputs(p, fixed) for name, p in find_pipelines(raise_errors=True).items()
    }
    stages = Environment.stages
    # Kedro 1.7 imports only the pipelines a run asks for; `__default__` exists when its stages are loaded.
    if all(name in pipelines for name in stages):
        pipelines["__default__"] = sum((pipelines[n] for n in stages), Pipeline([]))
    return pipelines


def known_pipelines() -> list[str]:
    """The registered pipeline names: one per folder of `pipelines/` with a `pipeline.py`."""
    root = Path(__file__).parent / "pipelines"
    return sorted(p.name for p in root.iterdir() if (p / "pipeline.py").is_file())


def unknown_pipeline_message(names) -> str | None:
    """None when every name is a pipeline (or `__default__`), else one sentence naming the unknown
    ones, the closest known name and the list (Kedro 1.7 reports a bare ImportError)."""
    known = known_pipelines()
    unknown = [n for n in names or [] if n not in known and n != "__default__"]
    if not unknown:
        return None
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        parts.append(
            f"unknown pipeline {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    return "; ".join(parts) + f". Pipelines: {', '.join(known)} (docs/architecture.md)."
