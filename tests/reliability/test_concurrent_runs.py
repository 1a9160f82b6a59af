"""Two identical runs started together (docs/reliability.md, case 25): the folder a step builds and
the training run directory are held by the Kedro run from the node's start until the run has saved
its outputs, so the second run is refused at once, naming the running one, instead of racing the
first one's post-processing of `final/` or of a staging folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipelines.conftest import PIXEL, TINY, _merge, load_params
from uvit_pipeline._io import LockedError
from uvit_pipeline.hooks import RunLocks
from uvit_pipeline.pipelines import _staging
from uvit_pipeline.pipelines._staging import hold_for_run, staging_dir
from uvit_pipeline.pipelines.train_uvit import nodes as training_nodes

from ..training.conftest import write_pixel_store
from .conftest import LockHolder


@pytest.fixture(autouse=True)
def _release():
    yield
    _staging.release_run_locks()


def test_a_second_training_is_refused_while_the_first_one_runs(
    tmp_path, short_lock_wait, monkeypatch
):
    store = write_pixel_store(tmp_path / "store")
    p = _merge(_merge(load_params("demo"), TINY), PIXEL)
    paths = {"staging": str(tmp_path / "staging"), "train_state": str(tmp_path / "train_state")}
    args = (p["model"], p["training"], p["launcher"], p["features"])
    run_dir = training_nodes.make_train_config(*args, str(store), paths["train_state"]).run_dir
    launched = []
    monkeypatch.setattr(training_nodes, "launch_training", lambda *a: launched.append(a))
    holder = LockHolder(
        Path(run_dir), run=True
    )  # the first run: its child trains, or its parent moves final/
    try:
        with pytest.raises(LockedError, match=rf"training run .*pid {holder.pid} on host"):
            training_nodes.train_uvit(str(store), None, *args, paths)
    finally:
        holder.close()
    assert launched == []  # refused before a child started or final/ was touched


def test_a_staging_folder_is_held_until_the_run_ends(tmp_path, short_lock_wait):
    """Evaluation, generate, features, import: every staging folder is held the same way."""
    folder = staging_dir(str(tmp_path), "samples", {"n": 1})
    assert staging_dir(str(tmp_path), "samples", {"n": 1}) == folder  # re-entrant in one process
    code = (
        "from uvit_pipeline._io import StagingLock; StagingLock.wait_s = 0.2; "
        "from uvit_pipeline.pipelines._staging import staging_dir; "
        f"staging_dir({str(tmp_path)!r}, 'samples', {{'n': 1}})"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert other.returncode != 0
    assert "samples staging folder" in other.stderr and "LockedError" in other.stderr
    RunLocks().after_pipeline_run()  # the run saved its outputs: released
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr


def test_the_run_lock_is_independent_of_the_writer_lock(tmp_path):
    """The library writer (or the training child) holds the plain lock on the same folder."""
    from uvit_pipeline._io import StagingLock

    hold_for_run(tmp_path / "run")
    with StagingLock(tmp_path / "run", "training run directory"):
        pass
