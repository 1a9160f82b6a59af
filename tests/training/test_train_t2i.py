"""Text-to-image training through the same loop: checks, save / resume / export, encoder identity."""

from __future__ import annotations

import json

import pytest
import torch

from uvit_pipeline.models import UViT
from uvit_pipeline.training import (
    TrainConfig,
    load_checkpoint_dir,
    load_uvit_from_checkpoint,
    train,
)
from uvit_pipeline.training.data import verify_text_store

from ..text_fixtures import ENCODER, write_latent_store, write_text_store

T2I_MODEL = dict(
    img_size=4,
    patch_size=2,
    in_chans=4,
    embed_dim=32,
    depth=2,
    num_heads=2,
    clip_dim=32,
    num_clip_token=77,
)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    return write_latent_store(root / "images"), write_text_store(root / "text")


def t2i_config(run_dir, stores, model=None, data=None, **overrides) -> TrainConfig:
    """Paper values where they do not cost time (§3.2): discrete schedule, p_uncond 0.1, betas 0.9."""
    images, text = stores
    d = dict(
        model=dict(model or T2I_MODEL),
        schedule="discrete",
        data={
            "path": str(images),
            "kind": "latent_moments",
            "random_flip": False,  # one stored view per COCO image (§7.3)
            "scale_factor": 0.2301,
            "text_path": str(text),
            "expected_text_encoder": {"name": ENCODER["name"], "sha256": ENCODER["sha256"]},
            "num_workers": 0,
            **(data or {}),
        },
        batch_size=4,
        lr=2e-4,
        betas=[0.9, 0.9],
        p_uncond=0.1,
        warmup_steps=2,
        mixed_precision="no",
        n_steps=4,
        ema_rate=0.9,
        log_interval=1,
        save_interval=2,
        run_dir=str(run_dir),
        cpu=True,
    )
    d.update(overrides)
    return TrainConfig.from_dict(d)


def test_t2i_trains_resumes_and_exports(tmp_path, stores):
    run_dir = tmp_path / "run"
    train(t2i_config(run_dir, stores, n_steps=2))
    assert (run_dir / "ckpts" / "2.ckpt").is_dir()
    final = train(t2i_config(run_dir, stores))  # resumes at step 2, runs to 4
    starts = [
        json.loads(line)
        for line in (run_dir / "events.jsonl").read_text().splitlines()
        if '"start"' in line
    ]
    assert [e["step"] for e in starts] == [0, 2]
    summary = json.loads((final / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["start_step"] == 2
    losses = [
        json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))

    config, ema_state, _ = load_checkpoint_dir(final)
    assert config["text_encoder"] == {**ENCODER, "max_length": 77}
    assert config["data"]["text_path"] and config["betas"] == [0.9, 0.9]
    state = json.loads((run_dir / "ckpts" / "4.ckpt" / "state.json").read_text())
    assert state["config"]["text_encoder"]["sha256"] == ENCODER["sha256"]
    ema = load_uvit_from_checkpoint(final)  # strict load
    raw = load_uvit_from_checkpoint(final, which="raw")
    assert isinstance(ema, UViT) and ema.is_text and ema.context_embed.in_features == 32
    assert not torch.equal(ema.context_embed.weight, raw.context_embed.weight)
    out = ema(torch.zeros(2, 4, 4, 4), torch.tensor([1, 500]), context=torch.zeros(2, 77, 32))
    assert out.shape == (2, 4, 4, 4)


def test_config_needs_text_store_for_text_models(tmp_path, stores):
    with pytest.raises(ValueError, match="training.data.text_path"):
        t2i_config(tmp_path, stores, data={"text_path": ""}).validate()
    class_model = {k: v for k, v in T2I_MODEL.items() if k not in ("clip_dim", "num_clip_token")}
    with pytest.raises(ValueError, match="not text-conditional"):
        t2i_config(tmp_path, stores, model=class_model).validate()
    t2i_config(tmp_path, stores).validate()  # p_uncond > 0 is fine without num_classes
    assert t2i_config(tmp_path, stores).null_label() is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(model={**T2I_MODEL, "clip_dim": 16}), r"hidden size 32 .* != model.clip_dim 16"),
        (
            dict(model={**T2I_MODEL, "num_clip_token": 8}),
            r"max_length 77 != model.num_clip_token 8",
        ),
        (
            dict(data={"expected_text_encoder": {"sha256": "f" * 64}}),
            r"sha256: store='0+' expected='f+'",
        ),
    ],
)
def test_text_store_mismatches_are_refused(tmp_path, stores, change, message):
    config = t2i_config(tmp_path, stores, **change)
    with pytest.raises(ValueError, match=message):
        verify_text_store(config)
    with pytest.raises(ValueError, match=message):  # before any training state is written
        train(config)
    assert not (tmp_path / "ckpts").exists() or not any((tmp_path / "ckpts").iterdir())


def test_scale_factor_and_flip_are_checked_against_the_image_store(tmp_path, stores):
    with pytest.raises(ValueError, match=r"scale_factor is 0.18215 .* scale_factor 0.2301"):
        train(t2i_config(tmp_path / "a", stores, data={"scale_factor": 0.18215}))
    with pytest.raises(ValueError, match="random_flip must be false"):
        train(t2i_config(tmp_path / "b", stores, data={"random_flip": True}))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_t2i_fp16_paper_settings_on_gpu(tmp_path, stores):
    """§3.2: fp16 autocast + GradScaler with the COCO optimiser settings; contexts stay fp32 inputs."""
    final = train(
        t2i_config(tmp_path, stores, mixed_precision="fp16", cpu=False, n_steps=3, save_interval=3)
    )
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert (tmp_path / "ckpts" / "3.ckpt" / "scaler.pt").is_file()
    assert load_checkpoint_dir(final)[0]["mixed_precision"] == "fp16"
    load_uvit_from_checkpoint(final)
