"""`accelerate launch` of the training child: command line, 2-process gloo run, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from uvit_pipeline._io import atomic_write_json
from uvit_pipeline.launch import LaunchSpec, build_launch_command, write_accelerate_config
from uvit_pipeline.training import launch_training, train
from uvit_pipeline.training.checkpoint import find_latest_checkpoint

from .conftest import tiny_config


def _events(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_command_for_two_cpu_processes_and_single_process(tmp_path):
    args = ["--config", str(tmp_path / "c.json")]
    cmd = build_launch_command(
        LaunchSpec(num_processes=2, cpu=True),
        "uvit_pipeline.training",
        args,
        port=1234,
        accelerate_config_file=tmp_path / "a.json",
    )
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--config_file") + 1] == str(tmp_path / "a.json")
    # `--cpu --num_processes 2` would start one process: CPU multi-process uses --multi_gpu.
    assert "--multi_gpu" in cmd and "--cpu" not in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[cmd.index("--main_process_port") + 1] == "1234"
    assert cmd[-4:] == ["-m", "uvit_pipeline.training", "--config", str(tmp_path / "c.json")]
    one = build_launch_command(
        LaunchSpec(cpu=True, mixed_precision="bf16"), "uvit_pipeline.training", args, port=1
    )
    assert "--cpu" in one and "--multi_gpu" not in one
    assert one[one.index("--mixed_precision") + 1] == "bf16"
    with pytest.raises(ValueError, match="main_process_ip"):
        LaunchSpec(num_processes=4, num_machines=2).validate()
    with pytest.raises(ValueError, match="launcher.num_procs"):
        LaunchSpec.from_params({"num_procs": 2})


@pytest.mark.slow
def test_two_process_cpu_training_keeps_ranks_identical(tmp_path, pixel_store):
    run_dir = tmp_path / "run"
    final = launch_training(
        tiny_config(run_dir, pixel_store, n_steps=4), LaunchSpec(num_processes=2)
    )
    summary = json.loads((final / "summary.json").read_text())
    hashes = summary["rank_param_hashes"]
    assert [h["rank"] for h in hashes] == [0, 1]
    assert hashes[0]["nnet"] == hashes[1]["nnet"] and hashes[0]["nnet_ema"] == hashes[1]["nnet_ema"]
    start = _events(run_dir)[0]
    assert start["num_processes"] == 2 and start["distributed_type"] == "MULTI_CPU"  # gloo
    assert "Training from step 0" in (run_dir / "train.log").read_text()


def test_failed_child_raises_with_log_tail(tmp_path, pixel_store, monkeypatch):
    import uvit_pipeline.launch as launch

    script = "import sys; print('line one'); print('boom: store missing'); sys.exit(3)"
    monkeypatch.setattr(
        launch, "build_launch_command", lambda *a, **k: [sys.executable, "-c", script]
    )
    cfg = tiny_config(tmp_path / "run", pixel_store)
    with pytest.raises(RuntimeError, match="(?s)exited with code 3.*boom: store missing"):
        launch_training(cfg, LaunchSpec())
    assert "boom" in (tmp_path / "run" / "train.log").read_text()
    assert json.loads((tmp_path / "run" / "train_config.json").read_text()) == cfg.to_dict()


@pytest.mark.slow
def test_killed_child_resumes_from_last_saved_step(tmp_path, pixel_store):
    run_dir = tmp_path / "run"
    cfg = tiny_config(
        run_dir, pixel_store, n_steps=60, save_interval=5, keep_last=3, log_interval=10
    )
    run_dir.mkdir()
    atomic_write_json(run_dir / "train_config.json", cfg.to_dict())
    spec = LaunchSpec(cpu=True)
    acc = write_accelerate_config(run_dir / "accelerate_config.json", spec, port=29511)
    cmd = build_launch_command(
        spec,
        "uvit_pipeline.training",
        ["--config", str(run_dir / "train_config.json")],
        port=29511,
        accelerate_config_file=acc,
    )
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while find_latest_checkpoint(run_dir / "ckpts") is None:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (run_dir / "final").exists(), "child finished before it could be killed"
    k = int(find_latest_checkpoint(run_dir / "ckpts").name.split(".")[0])
    assert 0 < k < 60

    # Relaunch in-process (same run_dir, auto-resume); the launcher path is covered above.
    final = train(cfg)
    starts = [e for e in _events(run_dir) if e["event"] == "start"]
    assert [e["step"] for e in starts] == [0, k]
    assert starts[1]["resumed_from"].endswith(f"{k}.ckpt")
    summary = json.loads((final / "summary.json").read_text())
    assert (summary["start_step"], summary["steps"]) == (k, 60)
    assert "Training from step 0 to 60" in (tmp_path / "first.log").read_text()
