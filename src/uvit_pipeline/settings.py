"""Kedro project settings (https://docs.kedro.org/en/stable/kedro_project_setup/settings.html)."""

import hashlib
import os
from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.utils import find_kedro_project

from uvit_pipeline.devices import resolve_devices
from uvit_pipeline.pipelines.params import ParameterError
from uvit_pipeline.warning_filters import filter_known_warnings

# Telemetry never prompts or phones home for this project (the `.telemetry` file says the same).
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

filter_known_warnings()


def data_tag(name: str, default_root: str, root: str | None = None) -> str:
    """The data set's name in catalog paths: ``name`` for the environment's own raw data, and
    ``name-<folder>-<hash>`` when ``--params data_root=...`` points elsewhere, so artefacts of another
    data set never become versions of this one."""
    if root is None or Path(str(root)).resolve() == Path(str(default_root)).resolve():
        return name
    resolved = str(Path(str(root)).resolve())
    return f"{name}-{Path(resolved).name}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"


def raw_images_type(data_root: str | None = None) -> str:
    """Catalog type of a demo environment's `raw_images`: the generated set (a directory the project
    writes) by default, a read-only user folder when `--params data_root=...` names one."""
    if data_root is None:
        return "uvit_pipeline.datasets.DirectoryDataset"
    return "uvit_pipeline.datasets.RawDirectoryDataset"


def project_root() -> str:
    """The project folder (the nearest one up from the working directory holding pyproject.toml), so
    that `mlflow.db` is the same file from the project root, a notebook folder or a test copy."""
    root = find_kedro_project(Path.cwd())
    return str(root if root is not None else Path.cwd())


# `generate` keys whose null means "the `evaluation` section's value" (conf/base/parameters_generate.yml).
GENERATE_FROM_EVALUATION = (
    "use_ema",
    "sampler",
    "steps",
    "cfg_scale",
    "clip_x0",
    "decode_batch_size",
    "device",
    "grid_scale",
    "mixed_precision",
    "cfg_batched",
)


def fill_generate_defaults(params: dict) -> dict:
    """`generate.<key>: null` -> `evaluation.<key>` for the keys above (in place; returns params)."""
    generate, evaluation = params.get("generate"), params.get("evaluation")
    if isinstance(generate, dict) and isinstance(evaluation, dict):
        for key in GENERATE_FROM_EVALUATION:
            if generate.get(key) is None and key in evaluation:
                generate[key] = evaluation[key]
    return params


def nest_dotted(params: dict | None) -> dict:
    """`{"ingestion.workers": 4}` -> `{"ingestion": {"workers": 4}}`, merged with nested entries: a
    `--config` file may write `run: params:` either way (`--params` arrives nested already)."""
    out: dict = {}
    for key, value in (params or {}).items():
        *path, last = str(key).split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParameterError(
                    f"--params {key}: {part} is given both as a value and a section"
                )
        if isinstance(value, dict):
            value = nest_dotted(value)
            if isinstance(node.get(last), dict):
                value = _merged(node[last], value)
        node[last] = value
    return out


def _merged(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class ProjectConfigLoader(OmegaConfigLoader):
    """OmegaConfigLoader that names an unknown environment (and the known ones) instead of failing
    later inside a plugin with an unrelated error, reads dotted `--params` keys as nested ones, and
    fills `generate`'s defaults from `evaluation`."""

    def __init__(self, conf_source, env=None, runtime_params=None, **kwargs):
        run_env = env or kwargs.get("default_run_env")
        root = Path(str(conf_source))
        if run_env and root.is_dir() and not (root / run_env).is_dir():
            known = sorted(
                p.name for p in root.iterdir() if p.is_dir() and p.name not in ("base", "local")
            )
            raise ParameterError(
                f"Environment {run_env!r} does not exist (no folder {root / run_env}). "
                f"Known environments: {', '.join(known)}"
            )
        runtime_params = nest_dotted(runtime_params) if runtime_params else runtime_params
        super().__init__(conf_source, env=env, runtime_params=runtime_params, **kwargs)

    def __getitem__(self, key: str):
        config = super().__getitem__(key)
        return resolve_devices(fill_generate_defaults(config)) if key == "parameters" else config


CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    # A plain `kedro run` is the offline demo; paper experiments are `--env <experiment>`.
    "default_run_env": "demo",
    # An experiment environment lists only what differs from base: nested keys are deep-merged, so an
    # override of `training.lr` keeps `training.batch_size`.
    "merge_strategy": {"parameters": "soft", "mlflow": "soft", "globals": "soft"},
    "custom_resolvers": {
        "data_tag": data_tag,
        "project_root": project_root,
        "raw_images_type": raw_images_type,
    },
}

from uvit_pipeline.hooks import (  # noqa: E402
    CatalogGuard,
    CheckGenerateRequest,
    ExperimentPipelines,
    MissingInputs,
    MlflowTracking,
    NameFailedNode,
    RunLocks,
    RunSummary,
    ValidateParameters,
)

HOOKS = (
    ExperimentPipelines(),
    ValidateParameters(),
    CatalogGuard(),
    CheckGenerateRequest(),
    MissingInputs(),
    RunLocks(),
    NameFailedNode(),
    RunSummary(),
    MlflowTracking(),
)
