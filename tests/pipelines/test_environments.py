"""Every paper environment holds the official config's values (shared/docs/official-configs.json)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from uvit_pipeline.models import resolve_kwargs
from uvit_pipeline.pipelines.params import validate_sections
from uvit_pipeline.settings import CONFIG_LOADER_ARGS

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = ROOT.parent / "shared" / "docs" / "official-configs.json"
ENVS = [
    "cifar10_uvit_small",
    "celeba64_uvit_small",
    "imagenet64_uvit_mid",
    "imagenet64_uvit_large",
    "imagenet256_uvit_large",
    "imagenet256_uvit_huge",
    "imagenet512_uvit_large",
    "imagenet512_uvit_huge",
]
SAMPLERS = {"euler_maruyama_sde": {"euler_maruyama"}, "dpm_solver": {"dpm_solver", "dpm_solver_pp"}}


def load_params(env: str) -> dict:
    loader = OmegaConfigLoader(
        conf_source=str(ROOT / "conf"),
        env=env,
        **{k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"},
    )
    return loader["parameters"]


@pytest.fixture(scope="module")
def official() -> dict:
    if not OFFICIAL.is_file():
        pytest.skip(f"{OFFICIAL} is not available in this checkout")
    return json.loads(OFFICIAL.read_text())


@pytest.mark.parametrize("env", ENVS)
def test_environment_matches_official_config(env, official):
    o, p = official[env], load_params(env)
    t, ev = p["training"], p["evaluation"]
    model = resolve_kwargs(
        p["model"]["preset"], **{k: v for k, v in p["model"].items() if k != "preset"}
    )
    assert t["lr"] == o["optimizer.lr"]
    assert tuple(t["betas"]) == ast.literal_eval(o["optimizer.betas"])
    assert t["weight_decay"] == o["optimizer.weight_decay"]
    assert t["warmup_steps"] == o["lr_scheduler.warmup_steps"]
    assert t["n_steps"] == o["train.n_steps"]
    assert t["batch_size"] == o["train.batch_size"]
    assert t["ema_rate"] == 0.9999  # script default, §3
    assert t["mixed_precision"] == "fp16"
    for key in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "num_classes"):
        assert model[key] == o[f"nnet.{key}"], key
    assert model["in_chans"] == o.get("nnet.in_chans", 3)
    assert model.get("conv", True) == o.get("nnet.conv", True)
    assert t.get("gradient_checkpointing", False) == o.get("nnet.use_checkpoint", False)
    assert ev["steps"] == o["sample.sample_steps"]
    assert ev["n_samples"] == o["sample.n_samples"]
    assert ev["batch_size"] == o["sample.mini_batch_size"]
    assert ev["sampler"] in SAMPLERS[o["sample.algorithm"]]
    assert ev["cfg_scale"] == (o["sample.scale"] if o.get("sample.cfg") else 0.0)
    assert ev["clip_x0"] is False and ev["use_ema"] is True
    assert p["fid"]["network"] == "inception_v3_fid"
    validate_sections(p, {"data", "features", "model", "training", "launcher", "fid", "evaluation"})


def test_nested_override_keeps_siblings():
    base, cifar = load_params("local"), load_params("cifar10_uvit_small")
    assert cifar["training"]["lr"] == 2e-4 != base["training"]["lr"]
    # Keys the environment does not list come from base, also inside an overridden section.
    assert cifar["training"]["keep_last"] == base["training"]["keep_last"]
    assert cifar["training"]["data"]["random_flip"] == base["training"]["data"]["random_flip"]
    assert cifar["evaluation"]["seed"] == base["evaluation"]["seed"]
