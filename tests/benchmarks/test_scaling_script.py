"""benchmarks/scaling.py --quick: a stage through the real harness at 1 and 2 CPU processes, its rows
in the table and in the JSON (merged by stage with the rows of earlier runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_measures_a_stage_at_one_and_two_processes(tmp_path):
    out = tmp_path / "scaling.json"
    out.write_text(json.dumps({"other machine": {"rows": [{"stage": "kept"}]}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "benchmarks/scaling.py", "--quick", "--stages", "text", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "text features (CLIP)" in proc.stdout
    data = json.loads(out.read_text())
    assert data["other machine"] == {"rows": [{"stage": "kept"}]}
    (entry,) = [v for k, v in data.items() if k != "other machine"]
    assert entry["settings"]["quick"] is True
    rows = {r["processes"]: r for r in entry["rows"]}
    assert sorted(rows) == [1, 2]
    for p, r in rows.items():
        assert r["stage"] == "text features (CLIP)"
        assert r["items"] == entry["settings"]["captions"]
        assert r["wall_s"] > 0 and r["cpu_s_per_item"] > 0 and r["fixed_s"] > 0
        assert r["items_per_s"] == pytest.approx(r["items"] / r["wall_s"])
        assert r["efficiency"] == pytest.approx(r["items_per_s"] / (p * rows[1]["items_per_s"]))
    # the 2-process run launches children: their CPU time is counted
    assert rows[2]["cpu_s_per_item"] * rows[2]["items"] > 1.0
