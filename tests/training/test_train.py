"""In-process training runs on the tiny model: export, resume, schedules, latent stores."""

from __future__ import annotations

import json

import pytest
import torch

import uvit_pipeline.encoders as encoders
from uvit_pipeline.data import FeatureStoreMismatch
from uvit_pipeline.models import UViT
from uvit_pipeline.training import load_checkpoint_dir, load_uvit_from_checkpoint, train
from uvit_pipeline.training.checkpoint import find_latest_checkpoint

from .conftest import tiny_config


def _events(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pixel_store):
    run_dir = tmp_path_factory.mktemp("run")
    final = train(tiny_config(run_dir, pixel_store))
    return run_dir, final


def test_final_export_loads_strictly(trained):
    run_dir, final = trained
    assert final == run_dir / "final"
    assert sorted(p.name for p in final.iterdir() if not p.name.startswith(".")) == [
        "checksums.json",
        "config.json",
        "nnet.safetensors",
        "nnet_ema.safetensors",
        "summary.json",
    ]
    config, ema_state, raw_state = load_checkpoint_dir(final)
    assert config["model_kwargs"]["embed_dim"] == 32 and config["n_steps"] == 6
    ema = load_uvit_from_checkpoint(final)
    raw = load_uvit_from_checkpoint(final, which="raw")
    assert isinstance(ema, UViT) and not ema.training
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v, ema_state[k], rtol=0, atol=0)
    # 6 updates with EMA rate 0.9 leave the EMA behind the raw weights
    assert not torch.equal(ema.pos_embed, raw.pos_embed)
    summary = json.loads((final / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["start_step"] == 0
    assert summary["final_loss"] > 0 and summary["images_per_s"] > 0


def test_metrics_checkpoints_and_keep_last(trained):
    run_dir, _ = trained
    m = _metrics(run_dir)
    assert [r["step"] for r in m] == [2, 4, 6]
    assert {"loss", "lr", "steps_per_s", "images_per_s", "peak_mem_gib"} <= set(m[0])
    # lr after 2 scheduler steps with warmup 2 = full lr (§4.4)
    assert m[0]["lr"] == pytest.approx(1e-3)
    # saved at 3 and 6; keep_last=2 keeps both
    assert sorted(p.name for p in (run_dir / "ckpts").iterdir()) == ["3.ckpt", "6.ckpt"]
    ckpt6 = run_dir / "ckpts" / "6.ckpt"
    assert sorted(p.name for p in ckpt6.iterdir() if not p.name.startswith(".")) == [
        "lr_scheduler.pt",
        "nnet.safetensors",
        "nnet_ema.safetensors",
        "optimizer.pt",
        "state.json",
    ]
    state = json.loads((run_dir / "ckpts" / "6.ckpt" / "state.json").read_text())
    assert state["step"] == 6 and state["config"]["model_kwargs"]["depth"] == 2


def test_resume_ignores_tmp_and_incomplete_dirs(tmp_path, pixel_store):
    run_dir = tmp_path / "run"
    train(tiny_config(run_dir, pixel_store, n_steps=3, save_interval=3))
    ckpts = run_dir / "ckpts"
    # A crash mid-write leaves `<step>.ckpt.tmp`; a half-copied dir lacks files. Both are skipped.
    (ckpts / "9.ckpt.tmp").mkdir()
    (ckpts / "12.ckpt").mkdir()
    (ckpts / "12.ckpt" / "nnet.safetensors").write_bytes(b"partial")
    assert find_latest_checkpoint(ckpts) == ckpts / "3.ckpt"
    final = train(tiny_config(run_dir, pixel_store, n_steps=6, save_interval=3, keep_last=1))
    start = [e for e in _events(run_dir) if e["event"] == "start"]
    assert [e["step"] for e in start] == [0, 3]
    assert start[1]["resumed_from"].endswith("3.ckpt")
    assert json.loads((final / "summary.json").read_text())["steps"] == 6
    assert [r["step"] for r in _metrics(run_dir)] == [2, 3, 4, 6]  # 3 = end of the first run
    assert find_latest_checkpoint(ckpts) == ckpts / "6.ckpt"
    assert not (ckpts / "3.ckpt").exists()  # pruned by keep_last=1


def test_resume_restores_optimizer_and_scheduler(tmp_path, pixel_store):
    run_dir = tmp_path / "run"
    train(tiny_config(run_dir, pixel_store, n_steps=3, save_interval=3, warmup_steps=10))
    final = train(tiny_config(run_dir, pixel_store, n_steps=4, save_interval=3, warmup_steps=10))
    sched = torch.load(run_dir / "ckpts" / "4.ckpt" / "lr_scheduler.pt", weights_only=True)
    opt = torch.load(run_dir / "ckpts" / "4.ckpt" / "optimizer.pt", weights_only=True)
    assert sched["last_epoch"] == 4  # continued from 3, not restarted at 0
    assert int(next(iter(opt["state"].values()))["step"]) == 4
    assert json.loads((final / "summary.json").read_text())["start_step"] == 3


def test_discrete_schedule_class_conditional_cfg(tmp_path, pixel_store):
    cfg = tiny_config(
        tmp_path,
        pixel_store,
        schedule="discrete",
        n_steps=2,
        log_interval=1,
        model={**tiny_config(tmp_path, pixel_store).model, "num_classes": 3},
        p_uncond=0.5,
    )
    final = train(cfg)
    assert load_uvit_from_checkpoint(final).label_emb.num_embeddings == 3
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in _metrics(tmp_path))


def test_latent_moments_training(tmp_path, latent_store, monkeypatch):
    calls = []
    real = encoders.sample_latents

    def spy(moments, scale_factor, generator=None):
        calls.append((moments.dtype, tuple(moments.shape), scale_factor))
        return real(moments, scale_factor, generator)

    monkeypatch.setattr(encoders, "sample_latents", spy)
    model = dict(
        img_size=4, patch_size=2, in_chans=4, embed_dim=32, depth=2, num_heads=2, num_classes=4
    )
    cfg = tiny_config(
        tmp_path,
        latent_store,
        model=model,
        n_steps=2,
        log_interval=1,
        p_uncond=0.1,
        data={"path": str(latent_store), "kind": "latent_moments", "scale_factor": 0.18215},
    )
    final = train(cfg)
    config, _, _ = load_checkpoint_dir(final)
    assert config["data"]["kind"] == "latent_moments"
    assert len(_metrics(tmp_path)) == 2
    # one fresh fp32 posterior sample per step from the (B, 8, h, w) moments (§4.5)
    assert calls == [(torch.float32, (4, 8, 4, 4), 0.18215)] * 2


def test_store_checks_fail_before_training(tmp_path, pixel_store):
    with pytest.raises(FeatureStoreMismatch, match="resolution"):
        train(
            tiny_config(
                tmp_path,
                pixel_store,
                data={"path": str(pixel_store), "expected_meta": {"resolution": 16}},
            )
        )
    bad_model = {**tiny_config(tmp_path, pixel_store).model, "img_size": 16}
    with pytest.raises(ValueError, match=r"model\.in_chans/model\.img_size"):
        train(tiny_config(tmp_path, pixel_store, model=bad_model))
    assert not (tmp_path / "final").exists()


def test_a_larger_n_steps_continues_the_run_and_a_smaller_one_never_exports_more(
    tmp_path, pixel_store
):
    run_dir = tmp_path / "run"
    train(tiny_config(run_dir, pixel_store, n_steps=3, save_interval=3, keep_last=3))
    final = train(tiny_config(run_dir, pixel_store, n_steps=6, save_interval=3, keep_last=3))
    assert [e["step"] for e in _events(run_dir) if e["event"] == "start"] == [0, 3]
    assert json.loads((final / "summary.json").read_text())["steps"] == 6
    # Back to 3 steps: the kept state at step 3 is exported, not the 6-step model.
    final = train(tiny_config(run_dir, pixel_store, n_steps=3, save_interval=3, keep_last=3))
    assert json.loads((final / "summary.json").read_text())["steps"] == 3
    with pytest.raises(ValueError, match=r"training\.n_steps=4 is below the step this run"):
        train(tiny_config(run_dir, pixel_store, n_steps=4, save_interval=3, keep_last=3))
