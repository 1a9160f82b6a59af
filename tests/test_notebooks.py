"""The notebooks run, top to bottom, on the outputs of a finished demo run (tests/pipelines)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.pipelines.test_project import finished_demo  # noqa: F401 - the shared fixture

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_a_finished_demo(path, finished_demo):  # noqa: F811
    notebooks = finished_demo / "notebooks"
    notebooks.mkdir(exist_ok=True)
    shutil.copy(path, notebooks / path.name)
    nb = nbformat.read(notebooks / path.name, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(notebooks)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # grids / curves were drawn
