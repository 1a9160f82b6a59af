"""benchmarks/gpu.py: its task runner and tables, and the whole --dry-run in an environment shaped like
the GPU machine's (kedro, mlflow, diffusers, pytorch-fid and torchvision absent)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import resource
import signal
import subprocess
import sys
import sysconfig
import time
import types
import venv
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu  # noqa: E402  (benchmarks/gpu.py)
from _common import markdown_table  # noqa: E402

# What the GPU machine's python lacks (module names) and the distributions that provide them.
ABSENT_MODULES = ("kedro", "kedro_datasets", "mlflow", "diffusers", "pytorch_fid", "torchvision")
NEEDED_MODULES = ("torch", "accelerate", "einops", "safetensors", "transformers", "pandas",
                  "pyarrow", "scipy", "tqdm", "numpy", "PIL")  # fmt: skip


def _absent_dist(name: str) -> bool:
    name = re.sub(r"[-_.]+", "-", name).lower()
    return name.startswith(("kedro", "mlflow")) or name in (
        "diffusers",
        "pytorch-fid",
        "torchvision",
    )


def device_like_python(root: Path) -> Path:
    """A venv whose site-packages links every entry of this interpreter's except those owned only
    by the absent distributions (their packages and .dist-info folders)."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    src = Path(sysconfig.get_paths()["purelib"]).resolve()
    owners: dict[str, set[bool]] = {}
    for dist in importlib.metadata.distributions():
        if Path(dist.locate_file("")).resolve() != src:
            continue
        for f in dist.files or []:
            top = Path(str(f)).parts[0]
            if top != "..":
                owners.setdefault(top, set()).add(_absent_dist(dist.metadata["Name"]))
    hidden = {top for top, absent in owners.items() if absent == {True}}
    dst = (
        root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    )
    for entry in src.iterdir():
        if entry.name not in hidden:
            (dst / entry.name).symlink_to(entry)
    return root / "bin" / "python"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def device_python(tmp_path_factory) -> Path:
    return device_like_python(tmp_path_factory.mktemp("device-venv"))


@pytest.fixture(scope="module")
def dry_run(device_python, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-results")
    cmd = [str(device_python), "benchmarks/gpu.py", "--dry-run", "--results-dir", str(out)]
    t, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1200)
    end = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = end.ru_utime + end.ru_stime - cpu.ru_utime - cpu.ru_stime
    print(f"dry run: {time.perf_counter() - t:.0f} s wall, {cpu_s:.0f} s CPU")
    return proc, json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text()


@pytest.mark.slow
def test_device_like_env_lacks_the_absent_packages(device_python):
    code = (
        "import importlib.util as u, sys\n"
        f"missing = [m for m in {ABSENT_MODULES!r} if u.find_spec(m) is not None]\n"
        f"for m in {NEEDED_MODULES!r}: __import__(m)\n"
        "import uvit_pipeline.data, uvit_pipeline.training, uvit_pipeline.sampling\n"
        "from uvit_pipeline.encoders import sample_latents\n"
        "print('found:', missing)\n"
    )
    proc = subprocess.run([str(device_python), "-c", code], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "found: []"


@pytest.mark.slow
def test_dry_run_completes_without_the_absent_packages(dry_run):
    proc, data, _ = dry_run
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "ModuleNotFoundError" not in proc.stdout + proc.stderr
    assert data["env"]["dry_run"] is True and data["env"]["state"] == "complete"
    assert "Targets" in proc.stdout  # the tables are printed at the end


@pytest.mark.slow
def test_dry_run_writes_every_row_and_column(dry_run):
    _, data, md = dry_run
    run = gpu.Run(types.SimpleNamespace(dry_run=True, device="cpu", budget_s=1.0))
    cells = [c.key for g in gpu.train_grid(run) for c in g]
    assert [r["id"] for r in data["train"]] == cells and len(cells) == 27
    for section, cols in gpu.COLUMNS.items():
        rows = data[section]
        assert rows and all(set(cols) <= set(r) for r in rows), section
        # Markdown: a heading, the header row, the separator and one line per row.
        header = "| " + " | ".join(cols) + " |"
        assert f"## {gpu.TITLES[section]}" in md and header in md
        block = md.split(header, 1)[1].split("\n## ", 1)[0].strip().splitlines()
        assert len(block) == 1 + len(rows)

    train = data["train"]
    assert all(r["status"] == "ok" or r["attention"] == "xformers" for r in train)
    originals = {(r["model"], r["batch"], r["ckpt"]) for r in train if r["impl"] == "original"}
    assert len(originals) == 4
    for r in train:
        if r["status"] == "ok":
            assert r["img_per_s"] > 0 and r["timed_steps"] == 2 and r["mfu_pct"] is None
            paired = r["impl"] != "original" and (r["model"], r["batch"], r["ckpt"]) in originals
            assert (r["vs_original"] is not None) == paired, r["id"]
    assert {r["adamw"] for r in data["train"] if r["impl"] == "original"} == {"default"}
    assert {r["adamw"] for r in data["train"] if r["status"] == "ok" and r["impl"] == "ours"} >= {
        "fused"
    }

    assert len(data["loader"]) == 8 and all(r["status"] == "ok" for r in data["loader"])
    assert all(r["samples_per_s"] > 0 and r["headroom"] > 0 for r in data["loader"])
    assert len(data["sampling"]) == 16 and all(r["img_nfe_per_s"] > 0 for r in data["sampling"])
    batched = [r for r in data["sampling"] if r["cfg_passes"] == "batched"]
    assert all(r["batched_vs_separate"] > 0 for r in batched)

    checks = {r["check"]: r for r in data["correctness"]}
    assert len(checks) == 8
    for name, r in checks.items():
        if "xformers" in name:
            assert r["status"].startswith("skipped: xformers")
        elif r["threshold"] == "info":
            assert r["status"] == "ok" and r["value"]
        else:
            assert r["status"] == "ok" and r["passed"] is True, (name, r)
    assert [r["status"] for r in data["targets"]] == ["ok", "not measured", "not measured"]


def _run(budget_s: float, tmp_path):
    args = types.SimpleNamespace(dry_run=True, device="cpu", budget_s=budget_s)
    run = gpu.Run(args)
    results = gpu.Results(tmp_path, {"_t0": time.monotonic(), "dry_run": True, "device": "cpu",
                                     "torch": "x", "cuda": None, "accelerate": None,
                                     "xformers": None, "tf32_matmul": False, "peak_tflops": None,
                                     "started": "now", "budget_s": budget_s, "state": "running"})  # fmt: skip
    return run, results


def _task(results, key, estimate, fn):
    results.plan("correctness", key, check=key, threshold="pass")
    return gpu.Task("correctness", key, lambda: estimate, fn)


def test_runner_records_skips_failures_and_the_budget_stop(tmp_path):
    run, results = _run(8.0, tmp_path)

    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    def broken():
        raise RuntimeError("compile failed\nlong traceback")

    tasks = [
        _task(results, "fits", 0.1, lambda: {"value": 1, "passed": True}),
        _task(results, "too big", 99.0, lambda: {"value": 2}),
        _task(results, "oom", 0.1, oom),
        _task(results, "broken", 0.1, broken),
        _task(results, "overruns", 0.1, lambda: time.sleep(60)),
        _task(results, "after", 0.1, lambda: {"value": 3}),
    ]
    old = signal.signal(signal.SIGALRM, gpu._raise_budget)
    signal.setitimer(signal.ITIMER_REAL, 8.0)
    try:
        state = gpu.execute(run, results, tasks)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    status = {r["check"]: r["status"] for r in results.section("correctness")}
    assert state == "stopped: time budget"
    assert status["fits"] == "ok" and status["too big"].startswith("skipped: budget (needs ~99 s")
    assert status["oom"] == "OOM" and status["broken"] == "error: RuntimeError: compile failed"
    assert status["overruns"] == "stopped: time budget" and status["after"] == "skipped: budget"
    saved = json.loads((tmp_path / "gpu.json").read_text())
    assert [r["status"] for r in saved["correctness"]] == list(status.values())


def test_derived_columns_pair_each_cell_with_its_original(tmp_path):
    run, results = _run(10, tmp_path)
    for cell, ips in ((gpu.Cell("U-ViT-H/2", 64), 30.0),
                      (gpu.Cell("U-ViT-H/2", 64, "original", "fp16", fused=False), 20.0),
                      (gpu.Cell("U-ViT-H/2", 128, ckpt=True), 10.0)):  # fmt: skip
        results.plan("train", cell.key, id=cell.key, model=cell.model, batch=cell.batch,
                     impl=cell.impl, dtype=cell.dtype, ckpt=cell.ckpt)  # fmt: skip
        results.update("train", cell.key, status="ok", img_per_s=ips, mfu_pct=50.0,
                       peak_reserved_MiB=20000.0)  # fmt: skip
    for key, target in (("speed", "s"), ("mfu", "m"), ("memory", "r")):
        results.plan("targets", key, target=target, threshold="t")
    gpu.derive(results)
    train = results.section("train")
    assert [r.get("vs_original") for r in train] == [1.5, None, None]
    targets = {r["target"]: r for r in results.section("targets")}
    assert targets["s"]["measured"] == 1.5 and targets["s"]["met"] is True
    assert targets["m"]["met"] is True  # 50% >= 45%
    assert targets["r"]["measured"] == 20000.0 and targets["r"]["met"] is False


def test_markdown_table_formats_cells():
    table = markdown_table([{"a": 1.234567, "b": None, "c": True}, {"a": "x|y"}], ["a", "b", "c"])
    assert table.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1.235 | - | yes |",
                                  "| x/y | - | - |"]  # fmt: skip
