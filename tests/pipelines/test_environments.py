"""Every paper environment holds the official config's values (src/uvit_pipeline/models/
official_configs.json, the one in-repository record of the original configs)."""

from __future__ import annotations

import ast

import pytest

from uvit_pipeline.models import OFFICIAL_CONFIGS, resolve_kwargs
from uvit_pipeline.models.config import load_official_configs, official_script_defaults
from uvit_pipeline.pipelines.params import validate_all

from .conftest import ROOT, load_params

OFFICIAL = load_official_configs()
PAPER_ENVS = sorted(OFFICIAL)
# the original's `dpm_solver` algorithm name covers both solvers: DPM-Solver for continuous-time
# models, DPM-Solver++ for discrete ones (eval_*_discrete.py, §3.3)
SAMPLERS = {"euler_maruyama_sde": "euler_maruyama", "dpm_solver": None}


def test_every_official_config_has_an_environment():
    envs = {p.name for p in (ROOT / "conf").iterdir() if p.is_dir()}
    assert set(PAPER_ENVS) <= envs


@pytest.mark.parametrize("env", PAPER_ENVS)
def test_environment_matches_official_config(env):
    o, p = OFFICIAL[env], load_params(env)
    t, ev = p["training"], p["evaluation"]
    defaults = official_script_defaults()
    assert p["model"]["preset"] == env
    model = resolve_kwargs(
        p["model"]["preset"], **{k: v for k, v in p["model"].items() if k != "preset"}
    )
    assert model == OFFICIAL_CONFIGS[env]
    assert t["schedule"] == o["schedule"]
    assert t["lr"] == o["optimizer.lr"]
    assert tuple(t["betas"]) == ast.literal_eval(o["optimizer.betas"])
    assert t["weight_decay"] == o["optimizer.weight_decay"]
    assert t["warmup_steps"] == o["lr_scheduler.warmup_steps"]
    assert t["n_steps"] == o["train.n_steps"]
    assert t["batch_size"] == o["train.batch_size"]
    assert t["seed"] == o["seed"]
    assert t["ema_rate"] == defaults["ema_rate"]
    assert t["mixed_precision"] == defaults["mixed_precision"]
    assert t["p_uncond"] == o.get("dataset.p_uncond", 0.0)
    assert t["gradient_checkpointing"] == o.get("nnet.use_checkpoint", False)
    latent = "z_shape" in o
    assert (p["features"]["kind"] == "latent_moments") == latent
    if latent:
        scale = o.get("autoencoder.scale_factor", defaults["autoencoder.scale_factor"])
        assert p["features"]["scale_factor"] == scale
    assert ev["steps"] == o["sample.sample_steps"]
    assert ev["n_samples"] == o["sample.n_samples"]
    assert ev["batch_size"] == o["sample.mini_batch_size"]
    expected = SAMPLERS[o.get("sample.algorithm", "dpm_solver")] or (
        "dpm_solver_pp" if o["schedule"] == "discrete" else "dpm_solver"
    )
    assert ev["sampler"] == expected
    assert ev["cfg_scale"] == (o["sample.scale"] if o.get("sample.cfg") else 0.0)
    assert ev["clip_x0"] is False and ev["use_ema"] is True
    assert p["fid_reference"]["network"] == "inception_v3_fid"
    validate_all(p)


def test_nested_override_keeps_siblings():
    base, cifar = load_params("demo"), load_params("cifar10_uvit_small")
    assert cifar["training"]["lr"] == 2e-4 != base["training"]["lr"]
    # Keys the environment does not list come from base, also inside an overridden section.
    assert cifar["training"]["keep_last"] == base["training"]["keep_last"]
    assert cifar["training"]["data"]["random_flip"] == base["training"]["data"]["random_flip"]


def test_demo_settings_never_leak_into_paper_experiments():
    for env in PAPER_ENVS:
        p = load_params(env)
        assert p["evaluation"]["clip_x0"] is False
        assert p["training"]["ema_rate"] == 0.9999
        assert p["fid_reference"]["network"] == "inception_v3_fid"


@pytest.mark.parametrize("env", [*PAPER_ENVS, "demo", "demo_t2i"])
def test_generate_samples_as_evaluation_unless_told_otherwise(env):
    p = load_params(env)
    for key in ("use_ema", "sampler", "steps", "cfg_scale", "clip_x0", "device", "grid_scale"):
        assert p["generate"][key] == p["evaluation"][key], key
    told = load_params(env, {"generate": {"sampler": "euler_maruyama", "cfg_scale": 5.0}})
    assert told["generate"]["sampler"] == "euler_maruyama" and told["generate"]["cfg_scale"] == 5.0
    assert told["evaluation"] == p["evaluation"]
