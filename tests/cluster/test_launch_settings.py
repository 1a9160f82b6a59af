"""Launch settings from SLURM's environment, and bad settings that must fail fast (never hang)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import uvit_pipeline.launch as launch
from uvit_pipeline.launch import (
    LaunchSpec,
    build_launch_command,
    expand_hostlist,
    run_under_accelerate,
    srun_command,
)


def slurm_env(**kw) -> dict[str, str]:
    """The batch script's environment of `sbatch --nodes=2 --ntasks-per-node=2` (job 4242)."""
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_CPUS_ON_NODE": "16",
    }
    return {**env, **{k: str(v) for k, v in kw.items() if v is not None}}


@pytest.fixture
def no_scontrol(monkeypatch):
    """Host names expanded in Python, node names used as addresses (no SLURM on the test host)."""
    real_which = shutil.which
    monkeypatch.setattr(
        launch.shutil, "which", lambda name: None if name == "scontrol" else real_which(name)
    )


def test_from_slurm_derives_every_machine_setting(no_scontrol):
    spec = LaunchSpec.from_slurm(slurm_env(), launcher={"cpu": True})
    assert (spec.num_machines, spec.machine_rank, spec.num_processes) == (2, 0, 4)
    assert spec.main_process_ip == "gpu07"  # first host of the node list
    assert spec.main_process_port == 15000 + 4242 % 15000  # the same on every node of the job
    assert spec.slurm and spec.cpu
    # A GPU job: one launcher per node starts one process per GPU of the node.
    gpu = LaunchSpec.from_slurm(slurm_env(SLURM_GPUS_ON_NODE=8, SLURM_NODEID=1))
    assert (gpu.num_processes, gpu.machine_rank) == (16, 1)
    # Explicit address and port (another interface, a fixed port) are used as given.
    fixed = LaunchSpec.from_slurm(
        slurm_env(), launcher={"main_process_ip": "10.0.0.7", "main_process_port": 29400}
    )
    assert (fixed.main_process_ip, fixed.main_process_port) == ("10.0.0.7", 29400)
    one = LaunchSpec.from_slurm(
        slurm_env(SLURM_NNODES=1, SLURM_JOB_NODELIST="gpu07", SLURM_GPUS_PER_NODE="a100:8")
    )
    assert (one.num_machines, one.num_processes) == (1, 8)


def test_from_params_with_slurm_reads_the_allocation(no_scontrol, monkeypatch):
    for k, v in slurm_env(SLURM_NODEID=1).items():
        monkeypatch.setenv(k, v)
    params = {"num_processes": None, "num_machines": None, "machine_rank": None, "slurm": True}
    spec = LaunchSpec.from_params(params, cpu=True)
    assert (spec.num_processes, spec.num_machines, spec.machine_rank) == (4, 2, 1)
    # Values that agree with SLURM are fine.
    assert LaunchSpec.from_params({**params, "num_processes": 4}, cpu=True) == spec


@pytest.mark.parametrize(
    ("given", "env", "match"),
    [
        ({"num_machines": 4}, {}, r"launcher.num_machines=4 contradicts .*SLURM_NNODES gives 2"),
        ({"machine_rank": 0}, {"SLURM_NODEID": 1}, r"launcher.machine_rank=0 .*SLURM_NODEID"),
        (
            {"num_processes": 8},
            {},
            r"num_processes=8 contradicts .*2 nodes x 2 tasks per node \(SLURM_NTASKS_PER_NODE\)",
        ),
        ({}, {"SLURM_JOB_ID": ""}, r"SLURM_JOB_ID is not set"),
        ({}, {"SLURM_NNODES": "two"}, r"SLURM_NNODES='two' is not a whole number"),
        ({}, {"SLURM_NTASKS_PER_NODE": ""}, r"cannot tell how many processes to start per node"),
        ({"num_processes": 3}, {"SLURM_NTASKS_PER_NODE": ""}, r"how many processes .*per node"),
    ],
)
def test_slurm_environment_contradicting_parameters_is_rejected(no_scontrol, given, env, match):
    e = slurm_env(**{k: v for k, v in env.items() if v != ""})
    e.update({k: v for k, v in env.items() if v == ""})
    with pytest.raises(ValueError, match=match):
        LaunchSpec.from_slurm(e, launcher={"cpu": True, **given})


def test_bad_machine_settings_are_rejected_before_launch(tmp_path):
    with pytest.raises(ValueError, match=r"machine_rank must be in \[0, 2\).*got 2"):
        LaunchSpec(num_processes=2, num_machines=2, machine_rank=2, main_process_ip="h").validate()
    with pytest.raises(ValueError, match=r"machine_rank must be in \[0, 1\).*got -1"):
        LaunchSpec.from_params({"machine_rank": -1})
    with pytest.raises(ValueError, match="must be a multiple of launcher.num_machines"):
        LaunchSpec(num_processes=3, num_machines=2, main_process_ip="h").validate()
    with pytest.raises(ValueError, match="rendezvous_timeout_s must be positive"):
        LaunchSpec(rendezvous_timeout_s=0).validate()
    with pytest.raises(ValueError, match="main_process_port must be a port"):
        LaunchSpec(main_process_port=70000).validate()
    # The command line reports it too, at once, without starting anything.
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "uvit_pipeline.launch", "check", "--num-processes", "2"]
        + ["--num-machines", "2", "--machine-rank", "5", "--main-process-ip", "127.0.0.1"]
        + ["--work-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "machine_rank must be in [0, 2)" in r.stderr
    assert time.monotonic() - t0 < 30


def test_rendezvous_timeout_is_passed_to_torchrun():
    cmd = build_launch_command(
        LaunchSpec(num_processes=2, cpu=True, rendezvous_timeout_s=7), "m", [], port=1
    )
    assert cmd[cmd.index("--rdzv_conf") + 1] == "timeout=7"


def test_port_in_use_on_the_main_machine_fails_before_launch(tmp_path):
    with socket.socket() as held:
        held.bind(("", 0))
        held.listen()
        port = held.getsockname()[1]
        spec = LaunchSpec(num_processes=2, cpu=True, main_process_port=port)
        t0 = time.monotonic()
        with pytest.raises(ValueError, match=rf"main_process_port={port} is in use"):
            run_under_accelerate(spec, tmp_path, "uvit_pipeline.launch", ["_probe", "--cpu"])
        assert time.monotonic() - t0 < 5
    assert not (tmp_path / "accelerate_config.json").exists()  # nothing was started


@pytest.mark.slow
@pytest.mark.parametrize(
    ("machine_rank", "match"),
    [
        # Machine 1 alone: nobody listens at the main address.
        (1, r"main process at 127.0.0.1:\d+ was not reachable within .*rendezvous_timeout_s=2"),
        # Machine 0 alone: machine 1 never joins.
        (0, r"not every machine joined the main process .* within .*rendezvous_timeout_s=2"),
    ],
)
def test_missing_peer_fails_within_the_rendezvous_timeout(tmp_path, machine_rank, match):
    spec = LaunchSpec(
        num_processes=2,
        num_machines=2,
        machine_rank=machine_rank,
        main_process_ip="127.0.0.1",
        main_process_port=launch.free_port(),
        cpu=True,
        rendezvous_timeout_s=2,
    )
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=match):
        run_under_accelerate(spec, tmp_path, "uvit_pipeline.launch", ["_probe", "--cpu"])
    assert time.monotonic() - t0 < 60


def test_srun_step_runs_one_launcher_per_node(tmp_path, no_scontrol, monkeypatch):
    monkeypatch.setattr(launch.shutil, "which", lambda n: None if n == "scontrol" else f"/bin/{n}")
    spec = LaunchSpec.from_slurm(slurm_env(SLURM_GPUS_ON_NODE=8))
    cmd = srun_command(
        spec,
        tmp_path,
        "uvit_pipeline.training",
        ["--config", "c.json"],
        log_path=tmp_path / "train.log",
        what="training child",
        env=slurm_env(SLURM_GPUS_ON_NODE=8),
    )
    assert cmd[0] == "srun"
    # --ntasks overrides the job's SLURM_NTASKS (else srun ignores --ntasks-per-node=1).
    for flag in ("--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"):
        assert flag in cmd
    assert "--cpus-per-task=16" in cmd and "--gpus-per-task=8" in cmd
    i = cmd.index("uvit_pipeline.launch")
    assert cmd[i - 2 : i + 2] == [sys.executable, "-m", "uvit_pipeline.launch", "node"]
    assert cmd[-4:] == ["--", "uvit_pipeline.training", "--config", "c.json"]
    assert LaunchSpec(**json.loads((tmp_path / "launch_spec.json").read_text())) == spec
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="srun, which is not on the PATH"):
        srun_command(spec, tmp_path, "m", [], log_path=tmp_path / "x.log", what="child")


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("gpu07", ["gpu07"]),
        ("gpu[07-09,12]", ["gpu07", "gpu08", "gpu09", "gpu12"]),
        ("a[1-2],login-3", ["a1", "a2", "login-3"]),
        ("r[1-2]n[01-02]", ["r1n01", "r1n02", "r2n01", "r2n02"]),
        ("node[9-10]", ["node9", "node10"]),
    ],
)
def test_host_list_expansion(nodelist, hosts):
    assert expand_hostlist(nodelist) == hosts
    if shutil.which("scontrol"):  # SLURM's own parser agrees
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30
        )
        if out.returncode == 0:
            assert out.stdout.split() == hosts


@pytest.mark.slow
def test_two_machines_on_loopback_each_exit_zero(tmp_path):
    """Two machines named by address (127.0.0.1), each its own command with its own rank."""
    port = launch.free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "uvit_pipeline.launch", "check", "--cpu"]
            + ["--num-processes", "2", "--num-machines", "2", "--machine-rank", str(rank)]
            + ["--main-process-ip", "127.0.0.1", "--main-process-port", str(port)]
            + ["--rendezvous-timeout-s", "60", "--work-dir", str(tmp_path / f"m{rank}")]
            + ["--out", str(tmp_path / "out")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["sum"] == r["expected"] for r in ranks)
    assert (tmp_path / "m1" / "accelerate_config.machine1.json").is_file()


def test_a_node_of_another_step_size_refuses_to_start(tmp_path, monkeypatch, capsys):
    spec = LaunchSpec(num_processes=2, num_machines=2, main_process_ip="127.0.0.1", slurm=True)
    spec_path = tmp_path / "launch_spec.json"
    spec_path.write_text(json.dumps(dataclasses.asdict(spec)))
    monkeypatch.setenv("SLURM_STEP_NUM_NODES", "3")
    monkeypatch.setenv("SLURM_NODEID", "1")
    argv = ["node", "--spec", str(spec_path), "--work-dir", str(tmp_path), "--log", "x.log"]
    assert launch.main([*argv, "--", "uvit_pipeline.training"]) == 2
    assert "this srun step has 3 nodes, the launch expects 2" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs /proc (Linux)")
def test_sigterm_ends_the_launched_processes_too(tmp_path):
    """A scheduler's SIGTERM to the launching process (time limit, preemption) ends its launcher
    and ranks as well, though they run in their own session."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "uvit_pipeline.launch", "check", "--cpu", "--num-processes", "2"]
    cmd += ["--num-machines", "2", "--main-process-ip", "127.0.0.1"]  # machine 1 never comes
    cmd += ["--main-process-port", str(launch.free_port()), "--rendezvous-timeout-s", "120"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(processes_in(tmp_path)) < 2:  # the launcher has started
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.2)
    t0 = time.monotonic()
    proc.terminate()
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert time.monotonic() - t0 < 15
    assert processes_in(tmp_path) == []


def processes_in(folder: Path) -> list[str]:
    """Command lines of the processes whose working directory is `folder`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cwd").resolve() == folder.resolve():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found
