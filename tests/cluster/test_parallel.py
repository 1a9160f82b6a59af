"""`run_parallel`, the harness of every data-parallel stage: blocks split by rank, in process or
under `accelerate launch`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from uvit_pipeline.launch import LaunchSpec, Part, resolve_entry, run_parallel

ENTRY = "tests.cluster.parallel_entry:write_blocks"
ROOT = Path(__file__).resolve().parents[2]


def _blocks(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("block-*.json"))]


def test_part_takes_every_world_th_block():
    assert list(Part(1, 3).blocks(8)) == [1, 4, 7]
    assert [list(Part(r, 2).blocks(5)) for r in range(2)] == [[0, 2, 4], [1, 3]]
    assert Part().is_main and not Part(1, 2).is_main


def test_bad_entry_is_named():
    with pytest.raises(ValueError, match="package.module:function"):
        resolve_entry("tests.cluster.parallel_entry")


def test_one_process_runs_in_this_process(tmp_path):
    run_parallel(LaunchSpec(), ENTRY, {"out": str(tmp_path), "n": 3}, work_dir=tmp_path / "w")
    assert [b["rank"] for b in _blocks(tmp_path)] == [0, 0, 0]
    assert not (tmp_path / "w").exists()  # no payload, no launch


def test_two_processes_split_the_blocks(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    spec = LaunchSpec(num_processes=2, cpu=True)
    run_parallel(spec, ENTRY, {"out": str(tmp_path), "n": 5}, work_dir=tmp_path / "w")
    blocks = _blocks(tmp_path)
    assert [(b["block"], b["rank"], b["world"]) for b in blocks] == [
        (0, 0, 2), (1, 1, 2), (2, 0, 2), (3, 1, 2), (4, 0, 2)
    ]  # fmt: skip
