"""Jobs through a real SLURM cluster: the local one of scripts/slurm/local_cluster.sh (two slurmd
on this host; CI starts it). Only its partition `local` is used, so running the tests on a login
node of a real cluster submits nothing there."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .test_launch_settings import processes_in

ROOT = Path(__file__).resolve().parents[2]
SETUP = "bash scripts/slurm/local_cluster.sh up (as root, on Linux)"
PARTITION = "local"  # the partition local_cluster.sh configures


def _cluster_problem() -> str | None:
    if not sys.platform.startswith("linux"):
        return "SLURM tests need Linux"
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return f"no SLURM client tools (sbatch, sinfo) on PATH; start a local cluster: {SETUP}"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-p", PARTITION, "-o", "%N %T"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer within 20 s (slurmctld down?); {SETUP}"
    ready = {"idle", "mixed", "allocated", "completing"}
    nodes = {line.split()[0] for line in out.stdout.splitlines() if line.split()[-1] in ready}
    if out.returncode != 0 or len(nodes) < 2:
        why = out.stderr.strip() or f"{len(nodes)} node(s) up"
        return f"no SLURM partition {PARTITION!r} with 2 nodes up ({why}); {SETUP}"
    return None


_PROBLEM = _cluster_problem()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))]


def sbatch(tmp_path: Path, body: str, *, nodes: int = 2, timeout: int = 240) -> tuple[int, str]:
    """Submit `body` as a batch script and wait for it; (the job's exit code, its output)."""
    script = tmp_path / "job.sh"
    out = tmp_path / "job.out"
    script.write_text(
        textwrap.dedent(f"""\
        #!/bin/bash
        #SBATCH --partition={PARTITION}
        #SBATCH --nodes={nodes}
        #SBATCH --ntasks-per-node=1
        #SBATCH --time=5
        #SBATCH --job-name=uvit-test
        #SBATCH --output={out}
        #SBATCH --chdir={tmp_path}
        set -euo pipefail
        """)
        + textwrap.dedent(body)
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "PYTHONUNBUFFERED": "1",
    }
    sub = subprocess.run(
        ["sbatch", "--parsable", str(script)], capture_output=True, text=True, env=env, timeout=30
    )
    assert sub.returncode == 0, f"sbatch failed: {sub.stderr}"
    job = sub.stdout.strip().split(";")[0]
    # Polled with scontrol (`sbatch --wait` works too, but sleeps up to 32 s between its polls).
    deadline = time.monotonic() + timeout
    while True:
        info = subprocess.run(
            ["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=30
        ).stdout
        state = re.search(r"\bJobState=(\S+)", info)
        if state and state.group(1) not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            break
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job], timeout=30)
            pytest.fail(f"job {job} did not end within {timeout} s; output:\n{_read(out)}")
        time.sleep(0.5)
    code, sig = map(int, re.search(r"\bExitCode=(\d+):(\d+)", info).groups())
    return (code or (128 + sig if sig else 0)), f"job {job}: {state.group(1)}\n{_read(out)}"


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_launch_check_all_reduces_over_two_nodes(tmp_path):
    """`python -m uvit_pipeline.launch check --slurm`: settings from SLURM, one srun task per
    node, one gloo process per node; every rank writes what it saw."""
    rc, log = sbatch(
        tmp_path,
        f"{sys.executable} -m uvit_pipeline.launch check --slurm --cpu --out out --work-dir .\n",
    )
    assert rc == 0, log
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["slurm_nodeid"] for r in ranks] == ["0", "1"]  # one machine rank per node
    assert all(r["world_size"] == 2 and r["sum"] == r["expected"] == 3 for r in ranks)
    spec = json.loads((tmp_path / "launch_spec.json").read_text())
    assert (spec["num_machines"], spec["num_processes"], spec["slurm"]) == (2, 2, True)
    assert "0: probe:" in log and "1: probe:" in log  # srun --label: both tasks' output


def test_a_failing_rank_fails_the_job_naming_it(tmp_path):
    body = f"""\
    {sys.executable} - <<'EOF'
    from uvit_pipeline.launch import LaunchSpec, run_under_accelerate
    spec = LaunchSpec.from_slurm(launcher={{"cpu": True}})
    run_under_accelerate(spec, ".", "tests.cluster.fail_on_rank", [], env_extra={{"FAIL_RANK": "1"}})
    EOF
    """
    rc, log = sbatch(tmp_path, body)
    assert rc != 0, log
    assert "rank 1: failing on purpose" in log
    assert "srun over 2 nodes" in log and "task 1: Exited with exit code" in log
    # The node whose task srun ended (node 1, rank 0 waiting for rank 1) leaves no process behind.
    deadline = time.monotonic() + 15
    while (left := processes_in(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes outlived the job: {left}"


def test_tiny_training_over_two_nodes(tmp_path):
    """The library's training child launched over the allocation with the settings SLURM gives:
    both ranks end with the same weights, as with 2 local processes."""
    body = f"""\
    {sys.executable} - <<'EOF'
    import json
    from pathlib import Path
    from tests.training.conftest import tiny_config, write_pixel_store
    from uvit_pipeline.launch import LaunchSpec
    from uvit_pipeline.training import launch_training
    store = write_pixel_store(Path("store"))
    spec = LaunchSpec.from_slurm(launcher={{"cpu": True}})
    final = launch_training(tiny_config(Path("run"), store, n_steps=4), spec)
    print("summary:", (final / "summary.json").read_text().replace("\\n", " "))
    EOF
    """
    rc, log = sbatch(tmp_path, body)
    assert rc == 0, log
    summary = json.loads((tmp_path / "run" / "final" / "summary.json").read_text())
    hashes = summary["rank_param_hashes"]
    assert [h["rank"] for h in hashes] == [0, 1]
    assert hashes[0]["nnet"] == hashes[1]["nnet"]
    assert (tmp_path / "run" / "train.machine0.log").is_file()
    assert (tmp_path / "run" / "train.machine1.log").is_file()
