"""The parameter schema: every section's keys, their checks, and errors that name the dotted key.

`conf/base/parameters_*.yml` give every key a value (the paper experiments' shared settings); an
environment overrides some. `validate_all` runs on the merged parameters before any node runs
(`hooks.ValidateParameters`): an unknown key anywhere is refused with the closest known one, a bad
value is refused with its dotted name. Choices come from the library's registries (samplers,
schedules, crops, feature kinds), never restated here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

Check = Callable[[str, Any], None]

# Keys that only exist as `--params` values read by the configuration itself (catalog / mlflow.yml
# through `${runtime_params:...}`), not by any node.
RUNTIME_ONLY = ("data_root", "mlflow_tracking_uri", "prompt_file")


class ParameterError(click.ClickException, ValueError):
    """A parameter is unknown or invalid; the message names it and says what to change. On the
    command line it ends the run with that one message (click prints `Error: ...`), not a traceback."""

    def __init__(self, message: str):
        click.ClickException.__init__(self, message)
        ValueError.__init__(self, message)


# --- value checks ------------------------------------------------------------------------------


def _fail(name: str, what: str, value: Any) -> None:
    raise ParameterError(f"{name} must be {what}, got {value!r}")


def number(what: str, *, integer: bool = False, low=None, low_open=False, high=None) -> Check:
    """A check for an int (or any real number) in [low, high) — (low, high) when `low_open`."""

    def run(name, v):
        kind = int if integer else int | float
        ok = isinstance(v, kind) and not isinstance(v, bool)
        ok = ok and (low is None or (v > low if low_open else v >= low))
        if not ok or (high is not None and v >= high):
            _fail(name, what, v)

    return run


pos_int = number("a positive integer", integer=True, low=0, low_open=True)
nonneg_int = number("a non-negative integer", integer=True, low=0)
integer = number("an integer", integer=True)
pos_number = number("a positive number", low=0, low_open=True)
nonneg_number = number("a number >= 0", low=0)
probability = number("a number in [0, 1)", low=0, high=1)


def boolean(name, v):
    if not isinstance(v, bool):
        _fail(name, "true or false", v)


def string(name, v):
    if not isinstance(v, str) or not v:
        _fail(name, "a non-empty string", v)


def optional(check: Check) -> Check:
    def run(name, v):
        if v is not None:
            check(name, v)

    return run


def list_of(check: Check) -> Check:
    def run(name, v):
        if not isinstance(v, list | tuple):
            _fail(name, "a list", v)
        for i, item in enumerate(v):
            check(f"{name}[{i}]", item)

    return run


def one_of(options: Callable[[], Any] | tuple) -> Check:
    """A choice from a registry (a callable so heavy registries load only when checked)."""

    def run(name, v):
        known = list(options() if callable(options) else options)
        if v not in known:
            _fail(name, f"one of {known}", v)

    return run


def _mixed_precision(name, v):
    # YAML and `--params` read the documented value `no` as the boolean False.
    if v is False:
        return
    one_of(("no", "fp16", "bf16"))(name, v)


def _betas(name, v):
    numbers = all(isinstance(b, int | float) and not isinstance(b, bool) for b in v or ())
    if not isinstance(v, list | tuple) or len(v) != 2 or not numbers:
        _fail(name, "two numbers [beta1, beta2]", v)
    if not all(0 <= b < 1 for b in v):
        _fail(name, "two numbers in [0, 1)", v)


def _str_or_int(name, v):
    if not (isinstance(v, str) and v) and not (isinstance(v, int) and not isinstance(v, bool)):
        _fail(name, "a class index or a class name", v)


# --- registries (imported lazily: torch is heavy and every `kedro` command loads this module) ---


def _samplers():
    from uvit_pipeline.diffusion.samplers import SAMPLERS

    return SAMPLERS


def _schedules():
    from uvit_pipeline.diffusion.schedules import SCHEDULES

    return SCHEDULES


def _crops():
    from uvit_pipeline.data.images import CROPS

    return CROPS


def _feature_kinds():
    from uvit_pipeline.data.torch_datasets import FEATURE_KINDS

    return FEATURE_KINDS


def _sources():
    from uvit_pipeline.data.ingest import SOURCES

    return SOURCES


def _networks():
    from uvit_pipeline.metrics.network import METRIC_NAMES

    return METRIC_NAMES


def _attention():
    from uvit_pipeline.models.attention import ATTENTION_BACKENDS

    return ATTENTION_BACKENDS


def _official():
    from uvit_pipeline.models import OFFICIAL_CONFIGS

    return OFFICIAL_CONFIGS


# --- the schema --------------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "paths": {"staging": string, "train_state": string},
    "demo": {
        "layout": one_of(("imagenet", "coco")),
        "n_per_class": pos_int,
        "image_size": pos_int,
        "seed": integer,
    },
    "demo_autoencoder": {
        "steps": pos_int,
        "batch_size": pos_int,
        "lr": pos_number,
        "kl_weight": nonneg_number,
        "seed": integer,
        "widths": list_of(pos_int),
        "held_out": pos_int,
    },
    "data": {
        "source": one_of(_sources),
        "split": string,
        "workers": pos_int,
        "max_pixels": optional(pos_int),
    },
    "features": {
        "kind": one_of(_feature_kinds),
        "resolution": pos_int,
        "crop": one_of(_crops),
        "flip": boolean,
        "shard_size": pos_int,
        "batch_size": pos_int,
        "scale_factor": pos_number,
        "device": string,
    },
    "text": {
        "max_length": pos_int,
        "batch_size": pos_int,
        "shard_size": pos_int,
        "device": string,
        "prompts": list_of(string),
    },
    "model": None,  # UViT constructor arguments: checked by `_check_model`
    "training": {
        "schedule": one_of(_schedules),
        "batch_size": pos_int,
        "lr": pos_number,
        "betas": _betas,
        "weight_decay": nonneg_number,
        "eps": pos_number,
        "warmup_steps": nonneg_int,
        "n_steps": pos_int,
        "ema_rate": probability,
        "p_uncond": probability,
        "mixed_precision": _mixed_precision,
        "gradient_checkpointing": boolean,
        "checkpoint_every": pos_int,
        "compile": boolean,
        "fused_adamw": boolean,
        "attention": one_of(_attention),
        "log_interval": pos_int,
        "save_interval": pos_int,
        "keep_last": pos_int,
        "seed": integer,
        "resume": boolean,
        "peak_tflops": optional(pos_number),
        "data": {"random_flip": boolean, "num_workers": nonneg_int},
    },
    "launcher": {
        "num_processes": pos_int,
        "num_machines": pos_int,
        "machine_rank": nonneg_int,
        "main_process_ip": optional(string),
        "main_process_port": optional(pos_int),
        "cpu": boolean,
    },
    "fid": {
        "network": one_of(_networks),
        "batch_size": pos_int,
        "max_reference_images": optional(pos_int),
        "classifier": {"steps": pos_int, "batch_size": pos_int, "lr": pos_number, "seed": integer},
    },
    "evaluation": {
        "use_ema": boolean,
        "sampler": one_of(_samplers),
        "steps": pos_int,
        "clip_x0": boolean,
        "cfg_scale": nonneg_number,
        "cfg_sweep": list_of(nonneg_number),
        "n_samples": pos_int,
        "labels": one_of(("uniform", "train_frequencies")),
        "batch_size": pos_int,
        "seed": integer,
        "device": string,
        "num_processes": pos_int,
        "decode_batch_size": pos_int,
        "save_adm_npz": boolean,
        "grid_columns": pos_int,
        "grid_scale": pos_int,
    },
    "generate": {
        "prompts": list_of(string),
        "classes": list_of(_str_or_int),
        "n_per_condition": pos_int,
        "use_ema": boolean,
        "sampler": one_of(_samplers),
        "steps": pos_int,
        "cfg_scale": nonneg_number,
        "clip_x0": boolean,
        "seed": integer,
        "batch_size": pos_int,
        "decode_batch_size": pos_int,
        "device": string,
        "grid_scale": pos_int,
    },
    "import_pretrained": {"config": optional(one_of(_official))},
}


def _closest(key: str, known) -> str:
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; known: {sorted(known)}"


def _check_mapping(prefix: str, schema: dict, values: Any, required: bool) -> None:
    if not isinstance(values, dict):
        raise ParameterError(f"{prefix} must be a mapping, got {values!r}")
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if key not in schema:
            raise ParameterError(f"{name} is not a known parameter{_closest(key, schema)}")
        check = schema[key]
        if isinstance(check, dict):
            _check_mapping(name, check, value, required)
        else:
            check(name, value)
    if required:
        missing = [k for k in schema if k not in values]
        if missing:
            raise ParameterError(
                f"{prefix}.{missing[0]} is missing (every key has a default in conf/base)"
            )


def _model_keys() -> set[str]:
    import inspect

    from uvit_pipeline.models import UViT

    return {"preset"} | set(inspect.signature(UViT).parameters)


def _check_model(model: Any) -> None:
    if not isinstance(model, dict):
        raise ParameterError(f"model must be a mapping, got {model!r}")
    known = _model_keys()
    for key in model:
        if key not in known:
            raise ParameterError(f"model.{key} is not a known parameter{_closest(key, known)}")


def validate_section(name: str, values: Any, required: bool = True) -> None:
    """Check one top-level section (or scalar) against the schema."""
    if name not in SCHEMA:
        raise ParameterError(f"{name} is not a known parameter{_closest(name, SCHEMA)}")
    check = SCHEMA[name]
    if name == "model":
        _check_model(values)
    elif isinstance(check, dict):
        _check_mapping(name, check, values, required)
    else:
        check(name, values)


def validate_all(params: dict[str, Any]) -> None:
    """Every section, then what spans sections (the resolved training config)."""
    for name, values in params.items():
        if name in RUNTIME_ONLY:
            continue
        validate_section(name, values)
    for name in SCHEMA:
        if name not in params:
            raise ParameterError(f"parameter section {name!r} is missing from conf/base")
    features = params["features"]
    from uvit_pipeline.models import resolve_kwargs  # lazily: torch
    from uvit_pipeline.pipelines.training.nodes import make_train_config

    model = params["model"]
    try:
        kwargs = resolve_kwargs(
            model.get("preset"), **{k: v for k, v in model.items() if k != "preset"}
        )
    except ValueError as err:
        raise ParameterError(f"model.preset: {err}") from None
    text = "<text store>" if kwargs.get("clip_dim") else None
    make_train_config(
        model, params["training"], params["launcher"], features, "<store>", "<run>", text
    )


def _effective_entry(conf_source: Path, env: str, kind: str, key: str) -> str:
    """Unresolved YAML text of one top-level entry of the env's `catalog*`/`mlflow*` config (the
    environment's own entry replaces base's)."""
    import yaml

    found = ""
    for folder in (conf_source / "base", conf_source / env):
        for path in sorted(folder.glob(f"{kind}*.y*ml")):
            doc = yaml.safe_load(path.read_text()) or {}
            if key in doc:
                found = yaml.safe_dump(doc[key])
    return found


def referenced_runtime_params(conf_source: Path, env: str) -> set[str]:
    """Which `RUNTIME_ONLY` names the environment's configuration actually reads: `data_root` through
    its `raw_images` entry, `mlflow_tracking_uri` through mlflow.yml's `server`."""
    where = {
        "data_root": ("catalog", "raw_images"),
        "mlflow_tracking_uri": ("mlflow", "server"),
        "prompt_file": ("catalog", "prompt_file"),
    }
    return {
        name
        for name, (kind, key) in where.items()
        if f"runtime_params:{name}" in _effective_entry(conf_source, env, kind, key)
    }


def check_runtime_params(runtime: dict[str, Any], conf_source: Path, env: str) -> None:
    """Refuse `--params` entries nothing reads (a typo would otherwise be ignored silently)."""
    used = referenced_runtime_params(conf_source, env)
    for key in runtime:
        if key in SCHEMA:
            continue  # checked with the merged parameters
        if key in RUNTIME_ONLY and key in used:
            continue
        if key in RUNTIME_ONLY:
            raise ParameterError(
                f"--params {key}=... is not used by environment {env!r} (its catalog does not "
                f"read it); e.g. the demo environments generate their own raw data"
            )
        known = set(SCHEMA) | (set(RUNTIME_ONLY) & used)
        raise ParameterError(f"--params {key}: not a known parameter{_closest(key, known)}")
