"""An MLflow run left RUNNING by a `kedro run` killed with SIGKILL is marked KILLED the next time
the project runs (docs/reliability.md, case 27): each run records its process id and host."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import mlflow

from uvit_pipeline.hooks import HOST_TAG, PID_TAG, mark_orphaned_runs


def test_a_run_whose_process_is_gone_is_marked_killed(tmp_path):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("uvit_test")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer exists
    host = socket.gethostname()

    def opened(pid: int, host: str = host) -> str:
        run = client.create_run(experiment, tags={PID_TAG: str(pid), HOST_TAG: host})
        return run.info.run_id

    orphan, alive, elsewhere = opened(gone.pid), opened(os.getpid()), opened(gone.pid, "other")
    assert mark_orphaned_runs(client) == [orphan]
    status = {r: client.get_run(r).info.status for r in (orphan, alive, elsewhere)}
    assert status == {orphan: "KILLED", alive: "RUNNING", elsewhere: "RUNNING"}
