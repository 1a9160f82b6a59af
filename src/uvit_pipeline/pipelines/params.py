"""The parameter schema: every section's keys, their checks, and errors that name the dotted key.

`conf/base/parameters_<section>.yml` give every key a value (the paper experiments' shared
settings); an environment overrides some. `validate_all` runs on the merged parameters before any
node runs (`hooks.ValidateParameters`): an unknown key anywhere is refused with the closest known
one, a bad value is refused with its dotted name, and the training config the run will use is
checked as the training child checks it. The `model` and `training` sections are the declared fields
of `UViTConfig` / `TrainConfig` (`uvit_pipeline.fields`), never restated here; choices come from the
library's registries. `python -m uvit_pipeline.pipelines.params` writes docs/parameters.md.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import yaml

from uvit_pipeline.devices import unavailable_cuda
from uvit_pipeline.fields import (
    Check,
    boolean,
    integer,
    list_of,
    number,
    one_of,
    optional,
    text,
)
from uvit_pipeline.launch import LaunchSpec

# Keys that only exist as `--params` values read by the configuration itself (catalog / mlflow.yml
# through `${runtime_params:...}`), not by any node.
RUNTIME_ONLY = ("data_root", "mlflow_tracking_uri", "prompt_file")


class ParameterError(click.ClickException, ValueError):
    """A parameter is unknown or invalid; the message names it and says what to change. On the
    command line it ends the run with that one message (click prints `Error: ...`), not a traceback."""

    def __init__(self, message: str):
        click.ClickException.__init__(self, message)
        ValueError.__init__(self, message)


# --- value checks (the vocabulary of `uvit_pipeline.fields`, shared with the typed configs) --------

pos_int, nonneg_int = integer(1), integer(0)
pos_number, nonneg_number = number(0, low_open=True), number(0)
string = text
# `no` unquoted in YAML reads as False: both spellings mean no autocast.
_sampling_precision = Check(
    "one of auto, no, fp16, bf16", lambda v: v is False or v in ("auto", "no", "fp16", "bf16")
)
_str_or_int = Check(
    "a class index or a class name", lambda v: (isinstance(v, str) and bool(v)) or integer().ok(v)
)


# --- the library (imported on first check: it imports torch, ~3 s, and every `kedro` command loads
# this module, `kedro --help` included) -----------------------------------------------------------


@functools.cache
def _library() -> SimpleNamespace:
    from uvit_pipeline.data.images import CROPS
    from uvit_pipeline.data.sources import SOURCES
    from uvit_pipeline.data.torch_datasets import FEATURE_KINDS
    from uvit_pipeline.diffusion.samplers import SAMPLERS
    from uvit_pipeline.metrics.network import METRIC_NAMES
    from uvit_pipeline.models import OFFICIAL_CONFIGS, resolve_kwargs
    from uvit_pipeline.pipelines.train_uvit.nodes import make_train_config
    from uvit_pipeline.training.config import section_fields

    return SimpleNamespace(
        CROPS=CROPS,
        SOURCES=SOURCES,
        FEATURE_KINDS=FEATURE_KINDS,
        SAMPLERS=SAMPLERS,
        METRIC_NAMES=METRIC_NAMES,
        OFFICIAL_CONFIGS=OFFICIAL_CONFIGS,
        resolve_kwargs=resolve_kwargs,
        make_train_config=make_train_config,
        section_fields=section_fields,
    )


def _registry(name: str) -> Callable[[], Any]:
    return lambda: getattr(_library(), name)


# --- the schema --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One parameter: its check and what it means (docs/parameters.md is generated from these)."""

    check: Check
    help: str


def _p(check: Check, help: str = "") -> Param:
    return Param(check, help)


# Sections built from typed configs (`TrainConfig`, `UViTConfig`): their fields are the schema.
DERIVED = ("model", "training")
# Sections whose keys need not all be in conf/base (a model key overrides its preset).
OPTIONAL_KEYS = ("model",)

SCHEMA: dict[str, Any] = {
    "paths": {
        "staging": _p(string, "where nodes build directory outputs before the catalog moves them"),
        "train_state": _p(string, "where training runs keep their resumable states"),
    },
    "demo_data": {
        "layout": _p(one_of(("imagenet", "coco")), "train/<class>/*.png, or COCO 2014 + captions"),
        "n_per_class": _p(pos_int, "images per class (10 classes)"),
        "image_size": _p(pos_int, "side in pixels"),
        "seed": _p(integer(), "seed of the generator"),
    },
    "demo_autoencoder": {
        "widths": _p(list_of(pos_int), "channels per level; n levels downsample by 2^(n-1)"),
        "steps": _p(pos_int, "training steps"),
        "batch_size": _p(pos_int, "images per step"),
        "lr": _p(pos_number, "Adam learning rate"),
        "kl_weight": _p(nonneg_number, "weight of the KL term"),
        "held_out": _p(pos_int, "images kept out of training to report the reconstruction error"),
        "seed": _p(integer(), "initialisation and data-order seed"),
    },
    "ingestion": {
        "source": _p(one_of(_registry("SOURCES")), "the raw data set's layout"),
        "split": _p(string, "the split to read (COCO: both splits are always read)"),
        "workers": _p(pos_int, "parallel decoding threads (also used by features, fid_reference)"),
        "max_pixels": _p(optional(pos_int), "larger images are reported and skipped"),
    },
    "features": {
        "kind": _p(one_of(_registry("FEATURE_KINDS")), "pixels, or SD KL-f8 moments (§4.5)"),
        "resolution": _p(pos_int, "image side after the crop"),
        "crop": _p(one_of(_registry("CROPS")), "adm (ImageNet, §7.1), none, celeba, coco (§7.3)"),
        "flip": _p(boolean, "latent stores: also keep the mirror image's moments (§7.1)"),
        "shard_size": _p(pos_int, "images per shard of the feature store"),
        "batch_size": _p(pos_int, "images per encoder batch"),
        "scale_factor": _p(pos_number, "latent scale (§4.5; 0.23010 for MS-COCO)"),
        "device": _p(
            string, "device of the autoencoder: auto (CUDA when present, else CPU), cuda, cpu, ..."
        ),
    },
    "text": {
        "max_length": _p(pos_int, "tokens per caption (77 for the paper's CLIP)"),
        "batch_size": _p(pos_int, "captions per encoder batch"),
        "shard_size": _p(pos_int, "captions per shard of the text store"),
        "device": _p(string, "device of the text encoder"),
        "prompts": _p(list_of(string), "prompts shown in sample grids, one row each (§7.3)"),
    },
    "model": None,  # derived from UViTConfig (training.config.section_fields)
    "training": None,  # derived from TrainConfig and DataConfig
    "launcher": {
        "num_processes": _p(
            optional(pos_int), "processes on all machines (one per GPU); null = SLURM's (slurm)"
        ),
        "num_machines": _p(optional(pos_int), "machines; null = SLURM's (slurm)"),
        "machine_rank": _p(optional(nonneg_int), "this machine's rank; null = SLURM's (slurm)"),
        "main_process_ip": _p(optional(string), "address of rank 0 (several machines)"),
        "main_process_port": _p(optional(pos_int), "port of rank 0; null = a free one"),
        "rendezvous_timeout_s": _p(pos_int, "seconds to wait for every machine to join"),
        "slurm": _p(boolean, "inside a SLURM allocation: machines and ranks from its environment"),
        "cpu": _p(boolean, "train on the CPU (no GPU needed)"),
    },
    "fid_reference": {
        "network": _p(
            one_of(_registry("METRIC_NAMES")),
            "inception_v3_fid (pytorch-fid; reported as fid) or demo_classifier (demo_fd, not FID)",
        ),
        "batch_size": _p(pos_int, "images per feature batch"),
        "max_reference_images": _p(optional(pos_int), "null = every image (no official stats)"),
        "classifier": {
            "steps": _p(pos_int, "demo_classifier: training steps"),
            "batch_size": _p(pos_int, "demo_classifier: images per step"),
            "lr": _p(pos_number, "demo_classifier: learning rate"),
            "seed": _p(integer(), "demo_classifier: seed"),
        },
    },
    "evaluation": {
        "use_ema": _p(boolean, "sample with the EMA weights (the paper's)"),
        "sampler": _p(one_of(_registry("SAMPLERS")), "the sampler (§5)"),
        "steps": _p(pos_int, "network evaluations per sample"),
        "clip_x0": _p(boolean, "clip the predicted x0 to [-1, 1]"),
        "cfg_scale": _p(nonneg_number, "s in (1+s)·ε_c − s·ε_u (§4.3): 0.4 means w = 1.4"),
        "cfg_sweep": _p(list_of(nonneg_number), "guidance_sweep: the scales it scores"),
        "n_samples": _p(pos_int, "samples scored (the paper: 50,000; MS-COCO 30,000)"),
        "labels": _p(
            one_of(("uniform", "train_frequencies")), "class draw (ImageNet-64: frequencies)"
        ),
        "batch_size": _p(pos_int, "samples per batch and process"),
        "seed": _p(integer(), "sampling seed (chunk k has its own)"),
        "device": _p(
            string,
            "device of sampling, scoring and reference statistics: cpu runs the launcher's "
            "processes on the CPU, cuda one GPU each",
        ),
        "decode_batch_size": _p(pos_int, "latent models: latents per decoder batch (§5.3)"),
        "mixed_precision": _p(
            _sampling_precision,
            "autocast of the network forward while sampling (outputs in fp32): auto = fp16 on a "
            "GPU as the original, none (fp32) on the CPU; or no, fp16, bf16",
        ),
        "cfg_batched": _p(
            boolean,
            "guidance (cfg_scale > 0): the conditional and unconditional passes as one forward "
            "of 2B per step (faster, same result up to rounding) instead of two of B",
        ),
        "save_adm_npz": _p(boolean, "also write the samples as an ADM-evaluator .npz"),
        "grid_columns": _p(pos_int, "columns of the sample grid"),
        "grid_scale": _p(pos_int, "nearest-neighbour upscaling of the sample grid"),
    },
    "generate": {
        "prompts": _p(list_of(string), "text models: the prompts"),
        "classes": _p(list_of(_str_or_int), "class indices or names; empty = the first 10"),
        "n_per_condition": _p(pos_int, "images per prompt or class"),
        "use_ema": _p(optional(boolean), "null = evaluation.use_ema"),
        "sampler": _p(optional(one_of(_registry("SAMPLERS"))), "null = evaluation.sampler"),
        "steps": _p(optional(pos_int), "null = evaluation.steps"),
        "cfg_scale": _p(optional(nonneg_number), "null = evaluation.cfg_scale"),
        "clip_x0": _p(optional(boolean), "null = evaluation.clip_x0"),
        "seed": _p(integer(), "sampling seed"),
        "batch_size": _p(pos_int, "samples per batch"),
        "decode_batch_size": _p(optional(pos_int), "null = evaluation.decode_batch_size"),
        "device": _p(optional(string), "null = evaluation.device"),
        "grid_scale": _p(optional(pos_int), "null = evaluation.grid_scale"),
        "mixed_precision": _p(optional(_sampling_precision), "null = evaluation.mixed_precision"),
        "cfg_batched": _p(optional(boolean), "null = evaluation.cfg_batched"),
    },
    "import_pretrained": {
        "config": _p(
            optional(one_of(_registry("OFFICIAL_CONFIGS"))),
            "official config name; null = inferred from the checkpoint's keys and shapes",
        )
    },
}


def _from_fields(fields: dict) -> dict:
    return {
        k: _from_fields(f)
        if isinstance(f, dict)
        else Param(f.metadata["check"], f.metadata["help"])
        for k, f in fields.items()
    }


def section_schema(name: str) -> Any:
    """The schema of one section: a Param, or a dict of them (nested dicts for subsections)."""
    if name in DERIVED:
        return _from_fields(_library().section_fields()[name])
    return SCHEMA[name]


# Sections renamed so that a file holds the section it is named after (conf/base/parameters_<section>.yml).
RENAMED = {"data": "ingestion", "fid": "fid_reference", "demo": "demo_data"}


def _hint(section: str, known) -> str:
    if section in RENAMED:
        return f"; the section {section!r} is now {RENAMED[section]!r}"
    return _closest(section, known)


def _closest(key: str, known) -> str:
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; known: {sorted(known)}"


def _check(name: str, param: Param, value: Any) -> None:
    try:
        param.check(name, value)
    except ValueError as err:
        raise ParameterError(str(err)) from None


def _check_mapping(prefix: str, schema: dict, values: Any, required: bool) -> None:
    if not isinstance(values, dict):
        raise ParameterError(f"{prefix} must be a mapping, got {values!r}")
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if key not in schema:
            raise ParameterError(f"{name} is not a known parameter{_closest(key, schema)}")
        if isinstance(schema[key], dict):
            _check_mapping(name, schema[key], value, required)
        else:
            _check(name, schema[key], value)
    if required:
        missing = [k for k in schema if k not in values]
        if missing:
            raise ParameterError(
                f"{prefix}.{missing[0]} is missing (every key has a default in conf/base)"
            )


def validate_section(name: str, values: Any, required: bool = True) -> None:
    """Check one top-level section (or scalar) against the schema."""
    if name not in SCHEMA:
        raise ParameterError(f"{name} is not a known parameter{_hint(name, SCHEMA)}")
    schema = section_schema(name)
    if isinstance(schema, dict):
        _check_mapping(name, schema, values, required and name not in OPTIONAL_KEYS)
    else:
        _check(name, schema, values)


def validate_all(params: dict[str, Any]) -> None:
    """Every section, then what spans sections: the training config the run will use (the same
    checks the training child runs)."""
    for name, values in params.items():
        if name in RUNTIME_ONLY:
            continue
        validate_section(name, values)
    for name in SCHEMA:
        if name not in params:
            raise ParameterError(f"parameter section {name!r} is missing from conf/base")
    cuda = unavailable_cuda(params)
    if cuda:
        raise ParameterError(
            f"{', '.join(cuda)}: this machine has no CUDA device (torch.cuda.is_available() is "
            "False). Use device auto (CUDA when present, else CPU) or cpu, e.g. --params "
            + ",".join(c.split("=")[0] + "=auto" for c in cuda)
        )
    lib, model, launcher = _library(), params["model"], params["launcher"]
    try:
        kwargs = lib.resolve_kwargs(
            model.get("preset"), **{k: v for k, v in model.items() if k != "preset"}
        )
    except ValueError as err:
        raise ParameterError(f"model.preset: {err}") from None
    text = "<text store>" if kwargs.get("clip_dim") else None
    config = lib.make_train_config(
        model, params["training"], launcher, params["features"], "<store>", "<run>", text
    )
    try:
        # Inside a SLURM allocation (launcher.slurm) the process count comes from its environment.
        config.validate(num_processes=LaunchSpec.from_params(launcher).num_processes)
    except ValueError as err:
        raise ParameterError(str(err)) from None


def _effective_entry(conf_source: Path, env: str, kind: str, key: str) -> str:
    """Unresolved YAML text of one top-level entry of the env's `catalog*`/`mlflow*` config (the
    environment's own entry replaces base's)."""
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
        raise ParameterError(f"--params {key}: not a known parameter{_hint(key, known)}")


# --- the reference (docs/parameters.md) ------------------------------------------------------------

RUNTIME_HELP = {
    "data_root": "the raw data folder, as downloaded (the environment's raw_root when not given)",
    "mlflow_tracking_uri": "an MLflow server instead of the project's sqlite store",
    "prompt_file": "generate: a text file of prompts, one a line",
}
REFERENCE = Path("docs/parameters.md")


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def _yaml(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).split("\n")[0]
    if isinstance(value, list) and len(text) > 60:
        return f"{len(value)} items (see the file)"
    return f"`{text}`"


def _rows(prefix: str, schema: dict, base: dict, fields: dict | None) -> list[str]:
    rows = []
    for key, param in schema.items():
        name = f"{prefix}.{key}"
        if isinstance(param, dict):
            sub = fields.get(key) if fields else None
            rows += _rows(name, param, base.get(key) or {}, sub)
            continue
        if key in base:
            default = _yaml(base[key])
        else:  # a model key: the preset states it, else UViT's own default
            default = f"the preset's, else {_yaml(fields[key].default)}"
        rows.append(f"| `{name}` | {_cell(param.check.what)} | {_cell(default)} | {param.help} |")
    return rows


def render_reference(conf_base: Path) -> str:
    """docs/parameters.md: every section and key with its type/range, conf/base default and meaning."""
    out = [
        "# Parameters",
        "",
        "<!-- Generated by `python -m uvit_pipeline.pipelines.params` from the schema "
        "(pipelines/params.py, the typed configs) and conf/base; tests/test_docs.py keeps it "
        "current. -->",
        "",
        "Every key has its default in `conf/base/parameters_<section>.yml`; an environment "
        "(`conf/<experiment>/parameters.yml`) states what differs, and `--params section.key=value` "
        "overrides one run (several: comma-separated; a list in brackets, "
        '`--params "generate.classes=[0,1,2]"`). A `--config run.yml` file takes them under '
        "`run: params:`, nested or as dotted keys. A key that is not listed here is refused with "
        "the closest known one; a bad value is refused with its name before anything runs.",
        "",
        "The `model` and `training` sections are the fields of `models.UViTConfig` and "
        "`training.TrainConfig` (docs/training.md).",
    ]
    sections: dict[str, Any] = {}
    for path in sorted(conf_base.glob("parameters*.yml")):
        for name, values in (yaml.safe_load(path.read_text()) or {}).items():
            sections[name] = (path.name, values)
    field_sections = _library().section_fields()
    for name in SCHEMA:
        file, values = sections[name]
        schema = section_schema(name)
        out += ["", f"## `{name}`", "", f"`conf/base/{file}`", ""]
        out += ["| key | value | default | meaning |", "|---|---|---|---|"]
        if isinstance(schema, dict):
            out += _rows(name, schema, values, field_sections.get(name))
        else:
            out += _rows("", {name: schema}, {name: values}, None)
            out[-1] = out[-1].replace(f"`.{name}`", f"`{name}`")
    out += ["", "## Command line only", "", "| key | meaning |", "|---|---|"]
    out += [f"| `{key}` | {RUNTIME_HELP[key]} |" for key in RUNTIME_ONLY]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[3]
    (root / REFERENCE).write_text(render_reference(root / "conf" / "base"))
