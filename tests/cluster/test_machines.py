"""One Kedro run across plain machines: machine 0 coordinates every launch over a control channel,
the other machines serve it (`uvit_pipeline.machines`). Both sides run in their own processes on
loopback; the launched module is a trivial one (`fail_on_rank`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uvit_pipeline import launch, machines

from .machines_role import spec

ROOT = Path(__file__).resolve().parents[2]


def free_pair() -> int:
    """A port p with p and p + 1 free (rendezvous and control channel)."""
    for _ in range(50):
        p = launch.free_port()
        try:
            launch.check_port_free(p + 1)
            return p
        except ValueError:
            continue
    raise RuntimeError("no two adjacent free ports")


def role(rank: int, port: int, shared: Path, timeout: float, fail_rank: str = "none"):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]),
        "FAIL_RANK": fail_rank,
    }
    cmd = [sys.executable, "-m", "tests.cluster.machines_role", str(rank), str(port)]
    return subprocess.Popen(
        [*cmd, str(shared), str(timeout)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs, timeout: float = 120) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout + stderr))
    return out


@pytest.mark.slow
def test_two_machines_run_each_launch_and_both_exit_zero(tmp_path):
    port = free_pair()
    (rc0, out0), (rc1, out1) = finish([role(r, port, tmp_path, 60) for r in (0, 1)])
    assert (rc0, rc1) == (0, 0), (out0, out1)
    work = tmp_path / "work"
    # Each machine started its own processes of the launch, with its own log and config.
    assert (work / "fail_on_rank.log").is_file() and (work / "fail_on_rank.machine1.log").is_file()
    assert (work / "accelerate_config.machine1.json").is_file()
    assert not list(tmp_path.glob(".machines-*.token"))  # machine 0 cleaned up


@pytest.mark.slow
def test_a_failing_machine_fails_every_machine_naming_it(tmp_path):
    port = free_pair()
    t0 = time.monotonic()
    (rc0, out0), (rc1, out1) = finish([role(r, port, tmp_path, 60, "1") for r in (0, 1)])
    assert time.monotonic() - t0 < 90
    assert rc0 == 1 and rc1 == 1, (out0, out1)
    first = out0.split("Error: ", 1)[1].splitlines()[0]
    # Machine 0's error starts with the failing machine and points at its log.
    assert first.startswith("test child failed on machine 1 of 2"), out0
    assert "fail_on_rank.machine1.log" in first
    assert "rank      : 1" in out0  # torchrun's summary of the failed rank is in the tail
    # The worker ends non-zero with machine 0's verdict.
    assert (
        "machine 1 of 2: machine 0's run failed: ChildFailed: test child failed on machine 1"
        in out1
    )


def test_a_machine_that_never_joins_fails_machine_0_in_time(tmp_path):
    t0 = time.monotonic()
    ((rc, out),) = finish([role(0, free_pair(), tmp_path, 2)])
    assert rc == 1
    assert "machine(s) 1 did not join machine 0's control channel" in out
    assert "launcher.rendezvous_timeout_s=2.0 s" in out
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "work" / "accelerate_config.machine0.json").exists()  # nothing started


def test_a_missing_machine_0_fails_the_worker_in_time(tmp_path):
    t0 = time.monotonic()
    port = free_pair()
    ((rc, out),) = finish([role(1, port, tmp_path, 2)])
    assert rc == 1
    assert f"machine 0 was not reachable at 127.0.0.1:{port + 1}" in out
    assert "rendezvous_timeout_s=2.0 s" in out
    assert time.monotonic() - t0 < 30


def test_a_worker_without_the_shared_folder_is_refused(tmp_path):
    port = free_pair()
    with machines.Coordinator(spec(0, port, timeout=20), tmp_path) as coord:
        next(tmp_path.glob(".machines-*.token")).unlink()  # machine 1 sees another filesystem
        ((rc, out),) = finish([role(1, port, tmp_path / "elsewhere", 20)])
        assert rc == 1
        assert "cannot see machine 0's project folder" in out
        assert "needs the project folder" in out and "every machine sees" in out
        with pytest.raises(machines.MachinesError, match=r"machine 1 \(.*\): .*cannot see"):
            coord.run_launch(
                coord.spec,
                {"work_dir": str(tmp_path), "module": "m", "args": [], "log_path": "x.log"}
                | {"env": {}, "what": "test child"},
                run_here=lambda: pytest.fail("must not start"),
                abort_here=lambda: None,
            )


def test_a_worker_with_other_settings_is_refused(tmp_path):
    port = free_pair()
    with machines.Coordinator(spec(0, port), tmp_path):
        with pytest.raises(
            machines.MachinesError,
            match=r"refused .*launcher.num_processes=4 on machine 1 .* but 2 on machine 0",
        ):
            machines.serve(spec(1, port, num_processes=4))


def test_a_second_machine_with_the_same_rank_is_refused(tmp_path):
    port = free_pair()
    with machines.Coordinator(spec(0, port), tmp_path) as coord:
        first = role(1, port, tmp_path, 20)
        wait_until_ready(coord, first)
        with pytest.raises(machines.MachinesError, match="machine_rank 1 has already joined"):
            machines.serve(spec(1, port))
    assert finish([first], timeout=30)[0][0] == 0  # the first one is told the run succeeded


def wait_until_ready(coord: machines.Coordinator, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while not (coord.workers.get(1) and coord.workers[1].ready):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)


def test_a_worker_that_loses_machine_0_exits_non_zero(tmp_path):
    port = free_pair()
    coord = machines.Coordinator(spec(0, port), tmp_path).start()
    proc = role(1, port, tmp_path, 20)
    wait_until_ready(coord, proc)
    coord._stop.set()  # machine 0 dies: its sockets close without a word
    coord.workers[1].conn.close()
    coord._listener.close()
    ((rc, out),) = finish([proc], timeout=30)
    assert rc == 1 and "lost the connection to machine 0 before its run ended" in out


def test_the_control_port_in_use_fails_at_once(tmp_path):
    port = free_pair()
    with socket.socket() as held:
        held.bind(("", port + 1))
        held.listen()
        with pytest.raises(ValueError, match=rf"control port {port + 1} .* is in use"):
            machines.Coordinator(spec(0, port), tmp_path).start()
