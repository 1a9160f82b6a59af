"""Save on a stop signal (SIGTERM / SIGUSR1): training ends at the next step boundary with a state
that resumes exactly like a periodic save, on one process and across ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

import uvit_pipeline.training.loop as loop
from uvit_pipeline.training import train
from uvit_pipeline.training.stop import StopOnSignal, TrainingStopped

from .conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def _events(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return {**load_file(path / "nnet.safetensors"), **{
        f"ema.{k}": v for k, v in load_file(path / "nnet_ema.safetensors").items()
    }}  # fmt: skip


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _signal_at_step(monkeypatch, k: int, sig: int) -> None:
    """Send `sig` to this process during the k-th update (as a scheduler would, mid-step)."""
    real, calls = loop.train_step, []

    def step_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == k:
            os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", step_then_signal)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_saves_the_state_and_resume_is_exact(tmp_path, pixel_store, monkeypatch, sig):
    before = signal.getsignal(sig)
    cfg = dict(n_steps=10, save_interval=4, log_interval=2, keep_last=5)
    _signal_at_step(monkeypatch, 7, sig)
    with pytest.raises(TrainingStopped, match=f"stopped by {sig.name} at step 7 of 10") as err:
        train(tiny_config(tmp_path / "run", pixel_store, **cfg))
    assert err.value.path == str(tmp_path / "run" / "ckpts" / "7.ckpt")
    assert signal.getsignal(sig) == before  # the handler is removed again
    ckpts = sorted(p.name for p in (tmp_path / "run" / "ckpts").iterdir())
    assert ckpts == ["4.ckpt", "7.ckpt"] and not (tmp_path / "run" / "final").exists()
    last = _events(tmp_path / "run")[-1]
    assert (last["event"], last["step"], last["signal"]) == ("stopped", 7, sig.name)
    monkeypatch.undo()

    final = train(tiny_config(tmp_path / "run", pixel_store, **cfg))
    assert [e["step"] for e in _events(tmp_path / "run") if e["event"] == "start"] == [0, 7]

    # The same as a run whose state at step 7 came from an ordinary save (n_steps=7, then 10).
    train(tiny_config(tmp_path / "ref", pixel_store, **{**cfg, "n_steps": 7}))
    _assert_same(_weights(tmp_path / "run/ckpts/7.ckpt"), _weights(tmp_path / "ref/ckpts/7.ckpt"))
    ref_final = train(tiny_config(tmp_path / "ref", pixel_store, **cfg))
    _assert_same(_weights(final), _weights(ref_final))


def test_a_signal_on_the_last_step_or_after_a_save_writes_nothing_twice(
    tmp_path, pixel_store, monkeypatch
):
    cfg = dict(n_steps=6, save_interval=3, log_interval=3)
    _signal_at_step(monkeypatch, 3, signal.SIGTERM)  # step 3 was just saved: nothing new
    with pytest.raises(TrainingStopped, match="at step 3 of 6"):
        train(tiny_config(tmp_path / "a", pixel_store, **cfg))
    saves = [e for e in _events(tmp_path / "a") if e["event"] == "checkpoint"]
    assert [e["step"] for e in saves] == [3]
    monkeypatch.undo()
    _signal_at_step(monkeypatch, 6, signal.SIGTERM)  # the last step: the run just ends
    final = train(tiny_config(tmp_path / "b", pixel_store, **cfg))
    assert json.loads((final / "summary.json").read_text())["steps"] == 6


def test_poll_is_false_until_a_signal_then_names_it():
    """One process: a flag read (the multi-process all-reduce is covered by the launched tests)."""
    before = signal.getsignal(signal.SIGUSR1)
    with StopOnSignal() as stop:
        assert not any(stop.poll() for _ in range(100))
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.poll() and stop.signal_name == "SIGUSR1"
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal changes nothing
        assert stop.poll() and stop.signal_name == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) == before


def _train_ranks(run_dir: Path) -> list[psutil.Process]:
    """The training processes (the ranks) started under `run_dir`'s launch."""
    found = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        cmd = p.info["cmdline"] or []
        env = p.info["environ"] or {}
        if "uvit_pipeline.training" in cmd and str(run_dir) in " ".join(cmd) and "RANK" in env:
            found.append(p)
    return sorted(found, key=lambda p: int(p.info["environ"]["RANK"]))


PARENT = """
import sys
from pathlib import Path
from tests.training.conftest import tiny_config
from uvit_pipeline.launch import LaunchSpec
from uvit_pipeline.training import launch_training
from uvit_pipeline.training.stop import TrainingStopped
cfg = tiny_config(Path(sys.argv[1]), Path(sys.argv[2]), n_steps=int(sys.argv[3]),
                  save_interval=1000, log_interval=1, keep_last=3)
try:
    final = launch_training(cfg, LaunchSpec(num_processes=2))
except TrainingStopped as e:
    print("STOPPED:", e, flush=True)
    sys.exit(3)
print("FINAL:", final, flush=True)
"""


def _parent(run_dir: Path, store: Path, n_steps: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", PARENT, str(run_dir), str(store), str(n_steps)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_for_step(run_dir: Path, proc: subprocess.Popen, log: Path, step: int) -> None:
    deadline = time.time() + 180
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= step):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, f"training did not reach step {step} in 180 s"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["parent", "rank1"])
def test_two_ranks_stop_at_the_same_step_and_resume(tmp_path, pixel_store, target):
    """SIGTERM to the launching process (the Kedro node's, as a scheduler or Ctrl-C sends it),
    or SIGUSR1 to rank 1 alone: both ranks stop after the same step, the state is saved once, the
    parent raises TrainingStopped naming it, and a second launch resumes from that step."""
    run_dir, log = tmp_path / "run", tmp_path / "first.log"
    proc = _parent(run_dir, pixel_store, 100_000, log)
    try:
        _wait_for_step(run_dir, proc, log, 3)
        if target == "parent":
            proc.send_signal(signal.SIGTERM)
        else:
            _train_ranks(run_dir)[1].send_signal(signal.SIGUSR1)
        assert proc.wait(timeout=120) == 3, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    stopped = [e for e in _events(run_dir) if e["event"] == "stopped"]
    assert len(stopped) == 1, text[-3000:]
    k, name = stopped[0]["step"], stopped[0]["signal"]
    assert name == ("SIGTERM" if target == "parent" else "SIGUSR1")
    assert f"STOPPED: training stopped by {name} at step {k} of 100000" in text
    assert (run_dir / "ckpts" / f"{k}.ckpt").is_dir() and not _train_ranks(run_dir)

    log2 = tmp_path / "second.log"
    proc = _parent(run_dir, pixel_store, k + 2, log2)
    assert proc.wait(timeout=180) == 0, log2.read_text()[-3000:]
    starts = [e for e in _events(run_dir) if e["event"] == "start"]
    assert [e["step"] for e in starts] == [0, k]
    summary = json.loads((run_dir / "final" / "summary.json").read_text())
    hashes = summary["rank_param_hashes"]
    assert summary["start_step"] == k and hashes[0]["nnet"] == hashes[1]["nnet"]
