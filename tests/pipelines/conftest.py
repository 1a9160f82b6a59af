"""Pipeline tests in the Kedro starters' style: each pipeline runs with `SequentialRunner` on a small
in-memory catalog. Parameters are the demo environment's (conf/base + conf/demo), shrunk to seconds;
every directory a node builds lands in a temporary staging area given through `params:paths`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from uvit_pipeline.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

ROOT = Path(__file__).resolve().parents[2]

# The demo shrunk to seconds: 4 images per class, a few steps, a few samples.
TINY = {
    "demo_data": {"n_per_class": 4, "image_size": 16},
    "demo_autoencoder": {"widths": [8, 16, 32], "steps": 4, "batch_size": 8, "held_out": 4},
    "ingestion": {"workers": 1},
    "features": {"shard_size": 16, "batch_size": 8},
    "training": {
        "batch_size": 8,
        "n_steps": 6,
        "warmup_steps": 2,
        "log_interval": 2,
        "save_interval": 3,
        "data": {"num_workers": 0},
    },
    "fid_reference": {"batch_size": 16, "classifier": {"steps": 5, "batch_size": 16}},
    "evaluation": {
        "steps": 3,
        "n_samples": 8,
        "batch_size": 4,
        "grid_columns": 2,
        "cfg_sweep": [0.0, 1.0],
    },
    "generate": {"steps": 3, "n_per_condition": 2},
}

# The in-memory harness runs the pipelines in pixel space at 32 px (the demo environment itself is a
# latent one; `latent_chain` covers latents with the tiny KL-f8 VAE).
PIXEL = {
    "demo_data": {"image_size": 32},
    "features": {"kind": "pixels", "resolution": 32},
    "model": {"img_size": 32, "in_chans": 3, "patch_size": 4},
    "training": {"schedule": "vp_continuous"},
    "evaluation": {"sampler": "euler_maruyama", "clip_x0": True},
}


class Kept(MemoryDataset):
    """A MemoryDataset the runner does not release, so a test can read every intermediate."""

    def _release(self) -> None:
        pass


def params_items(params: dict, prefix: str = "") -> list[str]:
    """`{"a": {"b": [1, 2]}}` -> `["a.b=[1,2]"]`: a nested parameter dict as `kedro run --params`
    items (values as compact JSON, so no item holds a space or a stray comma outside a value)."""
    out = []
    for key, value in params.items():
        if isinstance(value, dict):
            out += params_items(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value, separators=(',', ':'))}")
    return out


def load_params(env: str, runtime: dict | None = None) -> dict:
    args = {k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    loader = CONFIG_LOADER_CLASS(str(ROOT / "conf"), env=env, runtime_params=runtime, **args)
    return loader["parameters"]


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture(scope="session")
def demo_params(tmp_path_factory) -> dict:
    params = _merge(_merge(load_params("demo"), TINY), PIXEL)
    root = tmp_path_factory.mktemp("kedro-data")
    params["paths"] = {"staging": str(root / "staging"), "train_state": str(root / "train_state")}
    return params


def run(pipeline, catalog: dict, params: dict) -> dict:
    """Run `pipeline` on MemoryDatasets holding `catalog` plus every `params:<section>`; returns the
    value of every output, intermediate ones included (the runner releases none of them)."""
    datasets = {k: MemoryDataset(v) for k, v in catalog.items()}
    for name, value in params.items():
        datasets[f"params:{name}"] = MemoryDataset(value)
    names = pipeline.all_outputs()
    for name in names:
        datasets.setdefault(name, Kept())
    data = DataCatalog(datasets)
    SequentialRunner().run(pipeline, data)
    return {name: data.load(name) for name in names}


@pytest.fixture(scope="session")
def demo_chain(demo_params):
    """The demo DAG up to a trained checkpoint, run once per session through the real pipelines."""
    from uvit_pipeline.pipelines.demo_data import create_pipeline as demo_data
    from uvit_pipeline.pipelines.features import create_pipeline as features
    from uvit_pipeline.pipelines.fid_reference import create_pipeline as fid_reference
    from uvit_pipeline.pipelines.ingestion import create_pipeline as ingestion
    from uvit_pipeline.pipelines.train_uvit import create_pipeline as training

    pipeline = demo_data() + ingestion() + features() + fid_reference() + training()
    catalog = {
        "autoencoder": None,
        "text_features": None,
        "inception_weights": "pytorch-fid",
        "official_fid_stats": None,
    }
    return run(pipeline, catalog, demo_params)


# A latent feature store built by the features pipeline with the tiny VAE (tests/conftest.py): 12 of the
# demo images (3 shards of 4), their posterior moments and those of their mirror images (§4.5, §7.1).
LATENT_FEATURES = {
    "kind": "latent_moments",
    "resolution": 32,
    "crop": "adm",
    "flip": True,
    "shard_size": 4,
    "batch_size": 4,
    "scale_factor": 0.18215,
    "device": "cpu",
}
N_LATENT = 12


def with_section(params: dict, section: str, **values) -> dict:
    """`params` with some keys of one section replaced (the others kept)."""
    return {**params, section: {**params[section], **values}}


@pytest.fixture(scope="session")
def latent_chain(demo_chain, demo_params, vae_dir):
    """Inputs, parameters and output of the features pipeline on a latent setting."""
    from uvit_pipeline.pipelines.features import create_pipeline as features

    manifest = demo_chain["image_manifest"].iloc[::3][:N_LATENT].reset_index(drop=True)
    params = with_section(demo_params, "features", **LATENT_FEATURES)
    inputs = {
        "raw_images": demo_chain["raw_images"],
        "image_manifest": manifest,
        "autoencoder": str(vae_dir),
    }
    out = run(features(), inputs, params)
    return {**inputs, "params": params, "image_features": out["image_features"]}


def write_checkpoint(
    path: Path,
    model_kwargs: dict,
    *,
    schedule: str = "vp_continuous",
    p_uncond: float = 0.0,
    seed: int = 0,
) -> str:
    """A randomly initialised U-ViT exported as a final checkpoint (`config.json` as training writes
    it), for checkpoint kinds the demo run does not produce (unconditional, no label dropping)."""
    import torch

    from uvit_pipeline.models import UViT
    from uvit_pipeline.training.checkpoint import export_final

    torch.manual_seed(seed)
    nnet = UViT(**model_kwargs)
    config = {
        "model_kwargs": model_kwargs,
        "schedule": schedule,
        "p_uncond": p_uncond,
        "data": {"kind": "pixels"},
    }
    return str(export_final(path, nnet, nnet, config, {"steps": 0}))


@pytest.fixture
def inception_calls(monkeypatch) -> list:
    """`metrics.fid.load_inception` recorded instead of run (offline there are no pytorch-fid
    weights): the list of the weights each call asked for."""
    import uvit_pipeline.metrics.fid as fid

    calls = []
    monkeypatch.setattr(fid, "load_inception", lambda weights=None, **kw: calls.append(weights))
    return calls
