"""One `kedro run` per machine, two machines on loopback sharing one project folder: machine 0 runs
the demo (shrunk to seconds), machine 1 serves its launches. Both exit 0, one MLflow run, one set
of catalog outputs, and the trained weights equal a 1-machine run's with the same 2 processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipelines.conftest import TINY, params_items
from tests.pipelines.test_project import copy_project

from .test_machines import free_pair

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KEDRO = str(Path(sys.executable).parent / "kedro")


def kedro_run(project: Path, params: list[str]) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path]),
        "KEDRO_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
    }
    return subprocess.Popen(
        [KEDRO, "run", "--params", ",".join(params)],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def launcher(rank: int, port: int, timeout: int = 120) -> list[str]:
    return params_items(
        {
            "launcher": {
                "num_processes": 2,
                "num_machines": 2,
                "machine_rank": rank,
                "main_process_ip": "127.0.0.1",
                "main_process_port": port,
                "rendezvous_timeout_s": timeout,
            }
        }
    )


def train_dirs(project: Path) -> list[Path]:
    return [p for p in (project / "data/06_models/demo/train_state").iterdir() if p.is_dir()]


@pytest.fixture(scope="module")
def two_machine_run(tmp_path_factory):
    """The demo DAG on 2 machines x 1 process, each machine its own `kedro run`."""
    project = copy_project(tmp_path_factory.mktemp("two-machines"))
    port = free_pair()
    procs = [kedro_run(project, params_items(TINY) + launcher(rank, port)) for rank in (0, 1)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    return project, [p.returncode for p in procs], outs


def test_each_machine_exits_zero_and_only_machine_0_runs_the_pipeline(two_machine_run):
    import mlflow

    project, rcs, (out0, out1) = two_machine_run
    assert rcs == [0, 0], f"machine 0:\n{out0[-3000:]}\nmachine 1:\n{out1[-3000:]}"
    assert "Pipeline execution completed successfully" in out0
    assert "Running node" not in out1 and "machine 0's run finished; done" in out1
    data = project / "data"
    for entry in (
        "04_feature/demo/image_features",
        "06_models/demo/uvit_checkpoint",
        "07_model_output/demo/generated_samples",
        "08_reporting/demo/evaluation_metrics.json",
    ):
        assert len(list((data / entry).iterdir())) == 1, entry  # one versioned copy
    # Machine 1 really trained: its processes of the launch logged next to machine 0's.
    (run_dir,) = train_dirs(project)
    assert (run_dir / "train.machine1.log").is_file()
    # Every launch machine 0 made over both machines (training; every stage that goes through
    # `run_parallel`: features, reference statistics, sampling, scoring) had machine 1's part.
    ours = re.findall(r"Launching: .*--num_machines 2 --machine_rank 0", out0)
    theirs = re.findall(r"machine 1 of 2: (.+) \(log: ", out1)
    assert "training child" in theirs and len(ours) == len(theirs), theirs
    launches = sorted(p.parent for p in data.rglob("accelerate_config.machine0.json"))
    assert run_dir in launches
    for folder in launches:
        assert (folder / "accelerate_config.machine1.json").is_file(), folder
    assert not list(data.glob(".machines-*.token"))
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    (run,) = mlflow.search_runs(experiment_ids=experiments, output_format="list")
    assert run.info.status == "FINISHED"


def test_two_machines_train_the_same_weights_as_one(two_machine_run, tmp_path, monkeypatch):
    """The 2-machine checkpoint equals the one 2 processes on one machine train from the same
    configuration (the same data, seed and steps; gloo sums the gradients the same way), with
    the same CPU threads per process as each machine gave its one process (the float sums of a
    matrix product depend on how many threads share it)."""
    import uvit_pipeline.launch as launch

    cores = os.cpu_count() or 1
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 2 * cores)
    from safetensors.torch import load_file

    from uvit_pipeline.launch import LaunchSpec
    from uvit_pipeline.training.child import launch_training
    from uvit_pipeline.training.config import TrainConfig

    project, rcs, _ = two_machine_run
    assert rcs == [0, 0]
    (run_dir,) = train_dirs(project)
    config = json.loads((run_dir / "train_config.json").read_text())
    config["run_dir"] = str(tmp_path / "one-machine")
    final = launch_training(TrainConfig.from_dict(config), LaunchSpec(num_processes=2, cpu=True))
    (ckpt,) = (project / "data/06_models/demo/uvit_checkpoint").iterdir()
    for name in ("nnet.safetensors", "nnet_ema.safetensors"):
        ours, theirs = load_file(ckpt / "uvit_checkpoint" / name), load_file(final / name)
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert ours[key].equal(theirs[key]), (name, key)


def test_machine_rank_out_of_range_is_refused_at_once(tmp_path):
    project = copy_project(tmp_path)
    t0 = time.monotonic()
    p = kedro_run(project, launcher(2, free_pair()))
    out = p.communicate(timeout=120)[0]
    assert p.returncode != 0
    assert "launcher.machine_rank must be in [0, 2)" in out and "got 2" in out
    assert "Running node" not in out and not (project / "mlflow.db").exists()
    assert time.monotonic() - t0 < 60


def test_a_machine_that_never_starts_fails_machine_0_before_any_node(tmp_path):
    project = copy_project(tmp_path)
    t0 = time.monotonic()
    p = kedro_run(project, launcher(0, free_pair(), timeout=3))
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 1
    assert "kedro run: machine(s) 1 did not join machine 0's control channel" in out
    assert "Running node" not in out and not (project / "mlflow.db").exists()
    assert time.monotonic() - t0 < 60
