"""A whole experiment as one SLURM job: `scripts/slurm/experiment.sbatch` on the local 2-node
cluster of scripts/slurm/local_cluster.sh runs the demo's default DAG (shrunk to seconds) as one
`kedro run`, training over both nodes; and a job told to stop (USR1, as SLURM's `--signal` sends
it before the time limit) saves the training state, requeues itself and resumes from it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.pipelines.conftest import TINY, params_items
from tests.pipelines.test_project import copy_project

from .test_slurm_cluster import _PROBLEM, PARTITION, ROOT, _read

pytestmark = [pytest.mark.slow, pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))]

SBATCH = ROOT / "scripts" / "slurm" / "experiment.sbatch"
VERSION = re.compile(r"\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d\.\d{3}Z")  # a catalog version's folder


def catalog_versions(data: Path) -> dict[str, list[str]]:
    """Every versioned catalog output under `data` and its versions."""
    found: dict[str, list[str]] = {}
    for folder in sorted(data.rglob("*")):
        if folder.is_dir() and VERSION.fullmatch(folder.name):
            found.setdefault(str(folder.parent.relative_to(data)), []).append(folder.name)
    return found


def project_copy(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    copy_project(project)
    (project / ".venv").symlink_to(ROOT / ".venv")
    return project


def submit(
    project: Path, params: dict, *, time_min: int = 15, extra: tuple = (), kedro: tuple = ()
) -> str:
    """`sbatch experiment.sbatch demo` from `project` on 2 nodes, 1 CPU process each."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "UVIT_PARAMS": ",".join(params_items(params)),
        "UVIT_CHECK_ARGS": "--cpu",
    }
    cmd = [
        "sbatch", "--parsable", f"--partition={PARTITION}", "--nodes=2", "--ntasks-per-node=1",
        f"--cpus-per-task={os.cpu_count()}", "--gpus-per-node=0", f"--time={time_min}",
        "--output=job.out", *extra, str(SBATCH), "demo", *kedro,
    ]  # fmt: skip
    sub = subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=env, timeout=30)
    assert sub.returncode == 0, f"sbatch failed: {sub.stderr}"
    return sub.stdout.strip().split(";")[0]


def job_info(job: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=30
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for(job: str, log: Path, until, timeout: float, what: str) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while not until(info := job_info(job)):
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job], timeout=30)
            pytest.fail(f"job {job}: {what} not within {timeout:.0f} s ({info}):\n{_read(log)}")
        time.sleep(1)
    return info


def ended(info: dict) -> bool:
    return info.get("JobState") not in (None, "PENDING", "CONFIGURING", "RUNNING", "COMPLETING")


def mlflow_runs(project: Path) -> list:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["uvit_demo"], output_format="list")


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{k}": v
        for name in ("nnet", "nnet_ema")
        for k, v in load_file(folder / f"{name}.safetensors").items()
    }


def test_the_demo_experiment_as_one_job_over_two_nodes(tmp_path, monkeypatch):
    import uvit_pipeline.launch as launch
    from uvit_pipeline.launch import LaunchSpec
    from uvit_pipeline.training import TrainConfig, launch_training

    project = project_copy(tmp_path)
    job = submit(project, TINY)
    log = project / "job.out"
    info = wait_for(job, log, ended, 900, "end")
    text = _read(log)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), text[-5000:]

    # One `kedro run`: one MLflow run, one versioned copy of every output of the demo DAG.
    assert text.count("uvit: kedro run ended with exit code 0") == 1, text[-5000:]
    (run,) = mlflow_runs(project)
    assert run.info.status == "FINISHED"
    data = project / "data"
    versions = catalog_versions(data)
    assert {k: len(v) for k, v in versions.items() if len(v) != 1} == {}
    stages = ("image_features", "reference_stats.npz", "uvit_checkpoint", "generated_samples")
    for output in (*stages, "evaluation_metrics.json", "run_report.html"):  # the whole DAG
        assert any(k.endswith(f"/{output}") for k in versions), (output, sorted(versions))

    # Training ran as 2 processes, one on each node, through srun.
    (ckpt,) = (data / "06_models/demo/uvit_checkpoint").glob("*/*")
    summary = json.loads((ckpt / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["steps"] == TINY["training"]["n_steps"]
    hashes = summary["rank_param_hashes"]
    assert [h["rank"] for h in hashes] == [0, 1] and hashes[0]["nnet"] == hashes[1]["nnet"]
    (run_dir,) = (
        p.parent for p in (data / "06_models/demo/train_state").glob("*/train_config.json")
    )
    assert {p.name for p in run_dir.glob("train.machine*.log")} == {
        "train.machine0.log",
        "train.machine1.log",
    }
    assert "srun --nodes=2" in text

    # The same training as 2 processes on this one machine gives the same weights.
    config = json.loads((run_dir / "train_config.json").read_text())
    config["run_dir"] = str(tmp_path / "one_machine")
    monkeypatch.chdir(project)  # the store's path in the config is the project's
    # A node's one process computes with all of the node's CPU threads: give each of the 2 local
    # processes as many (the launch splits os.cpu_count() over a machine's processes), so that the
    # float sums run in the same order.
    n_cpu = os.cpu_count()
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 2 * n_cpu)
    final = launch_training(TrainConfig.from_dict(config), LaunchSpec(num_processes=2, cpu=True))
    ours, ref = weights(ckpt), weights(final)
    assert ours.keys() == ref.keys()
    for k in ours:
        assert torch.equal(ours[k], ref[k]), k


def test_a_job_told_to_stop_saves_training_requeues_and_resumes(tmp_path):
    """USR1 to the batch shell while training runs (what `--signal=B:USR1@600` sends ten minutes
    before the time limit): training saves at a step boundary on both nodes, the job requeues
    itself, and its second start resumes training from that step and finishes the experiment."""
    project = project_copy(tmp_path)
    # n_steps from the project's configuration, which each start reads: the first start trains
    # until it is stopped, the second (once the test has lowered n_steps) a few steps more.
    conf = project / "conf" / "demo" / "parameters.yml"
    original = conf.read_text()
    assert original.count("  n_steps: 3000\n") == 1
    conf.write_text(original.replace("  n_steps: 3000\n", "  n_steps: 100000\n"))
    training = {k: v for k, v in TINY["training"].items() if k != "n_steps"}
    params = {**TINY, "training": {**training, "log_interval": 1, "save_interval": 10_000}}
    # The stages up to training only (what a stop and a resume concern), to keep the test short.
    job = submit(project, params, time_min=20, kedro=("--to-nodes=train_uvit",))
    log = project / "job.out"
    deadline = time.monotonic() + 600
    while not (metrics := list((project / "data").rglob("metrics.jsonl"))) or (
        len(metrics[0].read_text().splitlines()) < 2
    ):
        assert time.monotonic() < deadline, f"training did not start:\n{_read(log)}"
        assert not ended(job_info(job)), _read(log)[-5000:]
        time.sleep(0.5)
    run_dir = metrics[0].parent
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, timeout=30)

    wait_for(job, log, lambda i: f"requeueing job {job}" in _read(log), 300, "requeue")
    text = _read(log)
    # srun passes USR1 to every process of its step: the ranks get it from there, or SIGTERM
    # from their launcher, whichever comes first.
    m = re.search(r"Error: training stopped by (SIGTERM|SIGUSR1) at step (\d+) of 100000", text)
    assert m, text[-5000:]
    name, k = m.group(1), int(m.group(2))
    assert (run_dir / "ckpts" / f"{k}.ckpt").is_dir()
    conf.write_text(original.replace("  n_steps: 3000\n", f"  n_steps: {k + 3}\n"))

    # SLURM holds a requeued job for a while (its begin time is set ahead), then starts it
    # again: move the begin time closer, as an administrator may, to save the test the wait. Not
    # at once: the nodes refuse a start whose credential is as old as the requeue ("Job
    # credential revoked", which fails the job).
    wait_for(job, log, lambda i: i.get("JobState") == "PENDING", 120, "requeued job pending")
    time.sleep(10)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], timeout=30)
    info = wait_for(
        job, log, lambda i: ended(i) and int(i.get("Restarts", 0)) >= 1, 900, "requeued start"
    )
    text = _read(log)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), text[-5000:]
    assert "start 1 on" in text and "Skipping 4 nodes with existing outputs" in text
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "start"] == [0, k]
    assert [(e["step"], e["signal"]) for e in events if e["event"] == "stopped"] == [(k, name)]
    (ckpt,) = (project / "data/06_models/demo/uvit_checkpoint").glob("*/*")
    summary = json.loads((ckpt / "summary.json").read_text())
    assert (summary["start_step"], summary["steps"], summary["num_processes"]) == (k, k + 3, 2)
    # The second start wrote only what the first left missing: still one version of each output.
    assert {k: v for k, v in catalog_versions(project / "data").items() if len(v) != 1} == {}
    # One MLflow run per start: the stopped one failed, the resumed one finished the experiment.
    assert sorted(r.info.status for r in mlflow_runs(project)) == ["FAILED", "FINISHED"]
