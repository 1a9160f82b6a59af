"""GPU proof in one short run: training speed, memory and MFU against an original-faithful
baseline, data-loader headroom, guided-sampling throughput and correctness checks on CUDA.

    python3 benchmarks/gpu.py                  # on a CUDA machine (benchmarks/gpu.sh runs this + pytest -m gpu)
    python3 benchmarks/gpu.py --dry-run        # every step at toy size on CPU, well under a minute

Work runs in priority order under a time budget (`--budget-s`): a task whose estimate does not fit
what is left is recorded as skipped, and a task still running when the budget ends is stopped and
recorded as such. An OOM or a compile failure is recorded in its row and the run goes on. Results are
rewritten after every task to <results-dir>/gpu.json and gpu.md, so a run cut short keeps what it
measured; the tables are printed at the end. docs/performance.md explains every column.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import math
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import device_name, markdown_table, text_table, use_original_attention, write_json
from torch.utils.data import BatchSampler, DataLoader, Dataset

from uvit_pipeline._io import atomic_write_text
from uvit_pipeline.data import FeatureDataset, FeatureStore, FeatureStoreWriter
from uvit_pipeline.diffusion import get_schedule, make_eps_fn, noise_prediction_loss, sample
from uvit_pipeline.launch import LaunchSpec, run_under_accelerate
from uvit_pipeline.models import OFFICIAL_CONFIGS, Attention, UViT, count_flops, mfu
from uvit_pipeline.models import train_step_flops as step_flops
from uvit_pipeline.sampling import collect
from uvit_pipeline.training import TrainConfig, launch_training, load_uvit_from_checkpoint
from uvit_pipeline.training.checkpoint import find_latest_checkpoint, load_training_state
from uvit_pipeline.training.data_order import ResumableDataOrder
from uvit_pipeline.training.ema import create_ema, ema_update
from uvit_pipeline.training.loop import (
    build_train_objects,
    make_optimizer,
    train_step,
    warmup_lambda,
)
from uvit_pipeline.training.monitor import peak_flops, sync

# Paper backbone -> (official config, schedule of its official training run), docs/reference.md §3.
MODELS = {
    "U-ViT-S/2": ("cifar10_uvit_small", "vp_continuous"),
    "U-ViT-L/2": ("imagenet256_uvit_large", "vp_continuous"),
    "U-ViT-H/2": ("imagenet256_uvit_huge", "discrete"),
}
# --dry-run sizes: same conditioning / conv / channel layout, tiny width, depth and image.
TOY = {
    "U-ViT-S/2": dict(img_size=8, patch_size=2, in_chans=3, embed_dim=32, depth=2, num_heads=2),
    "U-ViT-L/2": dict(img_size=4, patch_size=2, in_chans=4, embed_dim=32, depth=2, num_heads=2,
                      num_classes=11),
    "U-ViT-H/2": dict(img_size=4, patch_size=2, in_chans=4, embed_dim=48, depth=2, num_heads=2,
                      num_classes=11, conv=False),
}  # fmt: skip
AMP = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
# Original U-ViT-H/2, batch 128, fp16 + xformers + checkpointing on one A100 (README, §9.2).
README_H2_CKPT_MB = 18_858
HEADROOM = 1.5  # a loader "keeps up" when it delivers >= 1.5x what the fastest step consumes
# First guesses of achieved FLOP/s and compile time (calibrated by the run) for the budget estimates.
RATE_GUESS = {"bf16": 300e12, "fp16": 300e12, "fp32": 40e12, "original": 200e12}
COMPILE_GUESS_S = {"U-ViT-S/2": 45.0, "U-ViT-L/2": 80.0, "U-ViT-H/2": 110.0}

COLUMNS = {
    "targets": ["target", "threshold", "measured", "met", "from"],
    "train": ["model", "batch", "impl", "dtype", "compile", "adamw", "ckpt", "attention",
              "img_per_s", "step_ms", "mfu_pct", "tflops", "peak_alloc_MiB", "peak_reserved_MiB",
              "vs_original", "first_step_s", "loss", "status"],
    "loader": ["store", "reader", "workers", "batch", "samples_per_s", "consumer",
               "consumer_img_per_s", "headroom", "keeps_up", "status"],
    "sampling": ["model", "sampler", "batch", "cfg_passes", "dtype", "nfe", "img_nfe_per_s",
                 "tflops", "peak_alloc_MiB", "batched_vs_separate", "status"],
    "correctness": ["check", "value", "threshold", "passed", "status"],
}  # fmt: skip
TITLES = {
    "targets": "Targets",
    "train": "Training step (forward + loss + backward + AdamW + LR schedule + EMA)",
    "loader": "Data loading vs. the step's consumption",
    "sampling": "Guided sampling (CFG scale 0.4, 2 network passes per NFE)",
    "correctness": "Correctness",
}


class BudgetExceeded(BaseException):
    """Raised in the main thread when the time budget ends (SIGALRM) or the run is terminated."""


# --- results --------------------------------------------------------------------------------------


class Results:
    """Rows per section (planned up front, so skipped work still shows), saved after every update."""

    def __init__(self, out_dir: Path, env: dict):
        self.json_path, self.md_path = out_dir / "gpu.json", out_dir / "gpu.md"
        self.env = env
        self.rows: dict[str, dict[str, dict]] = {s: {} for s in COLUMNS}

    def plan(self, section: str, key: str, **fields) -> None:
        self.rows[section][key] = {**dict.fromkeys(COLUMNS[section]), **fields, "status": "not run"}

    def update(self, section: str, key: str, **fields) -> None:
        self.rows[section][key].update(fields)

    def section(self, name: str) -> list[dict]:
        return list(self.rows[name].values())

    def save(self) -> None:
        derive(self)
        self.env["wall_s"] = round(time.monotonic() - self.env["_t0"], 1)
        env = {k: v for k, v in self.env.items() if not k.startswith("_")}
        write_json(self.json_path, {"env": env, **{s: self.section(s) for s in COLUMNS}})
        atomic_write_text(self.md_path, self.markdown())

    def markdown(self) -> str:
        e = self.env
        head = [
            "# GPU proof (`benchmarks/gpu.py`)",
            "",
            f"{'**DRY RUN: toy sizes on CPU, numbers mean nothing.** ' if e['dry_run'] else ''}"
            f"Device: {e['device']}; torch {e['torch']} (CUDA {e['cuda']}); accelerate "
            f"{e['accelerate']}; xformers {e['xformers']}; TF32 matmul {e['tf32_matmul']}; "
            f"MFU peak {e['peak_tflops']} TFLOP/s; started {e['started']}; wall {e['wall_s']} s of a "
            f"{e['budget_s']} s budget; {e['state']}.",
        ]
        body = [
            f"\n## {TITLES[s]}\n\n{markdown_table(self.section(s), COLUMNS[s])}" for s in COLUMNS
        ]
        return "\n".join(head + body) + "\n"

    def text(self) -> str:
        return "\n\n".join(
            f"{TITLES[s]}\n{text_table(self.section(s), COLUMNS[s])}"
            for s in COLUMNS
            if self.rows[s]
        )


def derive(results: Results) -> None:
    """Columns computed from other rows: ours/original, loader headroom, batched/separate, targets."""
    ok = lambda r: r.get("status") == "ok"  # noqa: E731
    train = [r for r in results.section("train") if ok(r)]
    for r in train:
        orig = [o for o in train if o["impl"] == "original" and _group(o) == _group(r)]
        if r["impl"] != "original" and orig:
            r["vs_original"] = round(r["img_per_s"] / orig[0]["img_per_s"], 3)
    for r in results.section("loader"):
        want = ("U-ViT-S/2",) if r["store"] == "pixels" else ("U-ViT-L/2", "U-ViT-H/2")
        feeds = [t for t in train if t["model"] in want]
        if feeds and ok(r):
            best = max(feeds, key=lambda t: t["img_per_s"])
            r["consumer"], r["consumer_img_per_s"] = best["id"], best["img_per_s"]
            r["headroom"] = round(r["samples_per_s"] / best["img_per_s"], 2)
            r["keeps_up"] = r["headroom"] >= HEADROOM
    samp = [r for r in results.section("sampling") if ok(r)]
    for r in samp:
        sep = [s for s in samp if s["cfg_passes"] == "separate" and _sgroup(s) == _sgroup(r)]
        if r["cfg_passes"] == "batched" and sep:
            r["batched_vs_separate"] = round(r["img_nfe_per_s"] / sep[0]["img_nfe_per_s"], 3)
    _targets(results, train)


def _group(r: dict) -> tuple:
    return r["model"], r["batch"], r["ckpt"]


def _sgroup(r: dict) -> tuple:
    return r["model"], r["sampler"], r["batch"], r["dtype"]


def _targets(results: Results, train: list[dict]) -> None:
    if not results.rows["targets"]:
        return
    h2 = [
        r
        for r in train
        if r["model"] == "U-ViT-H/2" and r["impl"] == "ours" and r["dtype"] == "bf16"
    ]
    ratios = [r for r in h2 if r.get("vs_original") is not None]
    best = max(ratios, key=lambda r: r["vs_original"], default=None)
    _target(results, "speed", best and best["vs_original"], lambda v: v >= 1.3, best)
    best = max(
        (r for r in h2 if r.get("mfu_pct") is not None), key=lambda r: r["mfu_pct"], default=None
    )
    _target(results, "mfu", best and best["mfu_pct"], lambda v: v >= 45.0, best)
    ck = [
        r for r in h2 if r["ckpt"] and r["batch"] == 128 and r.get("peak_reserved_MiB") is not None
    ]
    best = min(ck, key=lambda r: r["peak_reserved_MiB"], default=None)
    _target(
        results,
        "memory",
        best and best["peak_reserved_MiB"],
        lambda v: v <= README_H2_CKPT_MB,
        best,
    )


def _target(results: Results, key: str, value, test: Callable, row: dict | None) -> None:
    if value is None:
        results.update(
            "targets", key, measured=None, met=None, status="not measured", **{"from": None}
        )
        return
    results.update(
        "targets", key, measured=value, met=bool(test(value)), status="ok", **{"from": row["id"]}
    )


# --- the run: sizes, budget, task runner ----------------------------------------------------------


@dataclass
class Task:
    section: str
    key: str
    estimate: Callable[[], float]
    run: Callable[[], dict]


class Run:
    """Sizes and state shared by all tasks of one invocation."""

    def __init__(self, args, tmp: Path | None = None):
        self.args, self.dry = args, args.dry_run
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.tmp = tmp  # scratch folder for stores and child runs
        self.rates = dict(RATE_GUESS)
        self.compile_factor = 1.0
        self.accelerator = None
        self.mem_base = (0, 0)
        self.deadline = time.monotonic() + args.budget_s
        # Per-cell step counts: toy runs do 2 timed steps; GPU cells time >= min_time seconds.
        self.warmup, self.min_steps, self.max_steps = (1, 2, 2) if self.dry else (2, 3, 50)
        self.finite_steps = 4 if self.dry else 200
        self.sample_batches = (2, 4) if self.dry else (50, 250)
        self.sample_nfe = 2 if self.dry else 3
        self.loader_items, self.loader_batch, self.loader_batches = (
            (64, 8, 3) if self.dry else (8192, 128, 40)
        )

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def model_kwargs(self, name: str, **overrides) -> dict:
        base = TOY[name] if self.dry else OFFICIAL_CONFIGS[MODELS[name][0]]
        return {**base, "use_checkpoint": False, **overrides}

    def estimate(self, seconds: float) -> float:
        return 1.0 if self.dry else seconds

    def amp(self, dtype: str):
        amp = AMP[dtype]
        return torch.autocast(self.device.type, dtype=amp, enabled=amp is not None)


def execute(run: Run, results: Results, tasks: list[Task]) -> str:
    """Run the tasks in order; returns the run's final state ("complete" or why it stopped)."""
    stopped = ""
    for task in tasks:
        if stopped:
            results.update(task.section, task.key, status="skipped: budget")
            continue
        try:
            _execute_one(run, results, task)
        except BudgetExceeded as e:  # wherever it arrived: in the task, its clean-up or the save
            stopped = f"stopped: {e}"
            if results.rows[task.section][task.key]["status"] == "not run":
                results.update(task.section, task.key, status=stopped)
            _progress(run, task, stopped)
            _cleanup(run)
    results.save()
    return stopped or "complete"


def _execute_one(run: Run, results: Results, task: Task) -> None:
    need, left = task.estimate(), run.left()
    if need > left:
        status = f"skipped: budget (needs ~{need:.0f} s, {left:.0f} s left)"
        results.update(task.section, task.key, status=status)
        _progress(run, task, status)
        results.save()
        return
    t0 = time.monotonic()
    fields: dict = {}
    try:
        fields = task.run()
        status = fields.pop("status", "ok")
    except torch.cuda.OutOfMemoryError:
        status = "OOM"
    except Exception as e:  # one failing cell must not end the run
        first = (str(e).strip().splitlines() or [""])[0][:160]
        status = f"error: {type(e).__name__}: {first}"
        fields = {"detail": traceback.format_exc()[-2000:]}
    finally:
        _cleanup(run)
    results.update(task.section, task.key, **fields, status=status,
                   task_s=round(time.monotonic() - t0, 1))  # fmt: skip
    _progress(run, task, status, fields)
    results.save()


def _progress(run: Run, task: Task, status: str, fields: dict | None = None) -> None:
    keys = ("img_per_s", "samples_per_s", "img_nfe_per_s", "value", "mfu_pct", "peak_alloc_MiB")
    info = ", ".join(f"{k}={fields[k]}" for k in keys if fields and fields.get(k) is not None)
    print(f"[{run.args.budget_s - run.left():6.1f} s] {task.section}: {task.key}: {status} {info}",
          flush=True)  # fmt: skip


def _cleanup(run: Run) -> None:
    gc.collect()
    if run.cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _mib(nbytes: float) -> float:
    return round(nbytes / 2**20, 1)


def _reset_peak(run: Run) -> None:
    """Start a measured region: peaks are reported above what is held when it starts (normally
    nothing, as every task frees its objects)."""
    if run.cuda:
        torch.cuda.reset_peak_memory_stats(run.device)
        run.mem_base = (
            torch.cuda.memory_allocated(run.device),
            torch.cuda.memory_reserved(run.device),
        )


def _peak(run: Run) -> dict:
    if not run.cuda:  # CPU: no per-region allocator peak; the RSS high-water mark would mix tasks
        return {"peak_alloc_MiB": None, "peak_reserved_MiB": None}
    return {
        "peak_alloc_MiB": _mib(torch.cuda.max_memory_allocated(run.device) - run.mem_base[0]),
        "peak_reserved_MiB": _mib(torch.cuda.max_memory_reserved(run.device) - run.mem_base[1]),
    }


# --- training cells -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    model: str
    batch: int
    impl: str = "ours"  # "ours" | "original" (faithful re-implementation) | "loop" (training.loop)
    dtype: str = "bf16"
    compile: bool = False
    fused: bool = True
    ckpt: bool = False
    attention: str = "sdpa"

    @property
    def key(self) -> str:
        short = self.model.removeprefix("U-ViT-")
        if self.impl == "original":
            what = "original fp16 (fp32 q/k/v, plain AdamW, eager)"
        else:
            what = f"{self.impl} {self.dtype} {'fused' if self.fused else 'default'}-adamw"
            what += " compile" * self.compile + (
                "" if self.attention == "sdpa" else f" {self.attention}"
            )
        return f"{short} b{self.batch}{' ckpt' if self.ckpt else ''} {what}"


class Trainer:
    """One training configuration on fixed inputs; `step(i)` is one update, noise/t seeded by i."""

    def __init__(self, run: Run, cell: Cell):
        self.run, self.cell, dev = run, cell, run.device
        self.kwargs = run.model_kwargs(
            cell.model, use_checkpoint=cell.ckpt, attention=cell.attention
        )
        name = MODELS[cell.model][1]
        torch.manual_seed(0)  # same weights for every cell of a model
        g = torch.Generator().manual_seed(1)
        kw = self.kwargs
        c, s, k = kw["in_chans"], kw["img_size"], kw.get("num_classes", -1)
        self.x0 = torch.randn(cell.batch, c, s, s, generator=g).to(dev)
        self.y = torch.randint(0, k, (cell.batch,), generator=g).to(dev) if k > 0 else None
        self.gen = torch.Generator(device=dev)
        self.scaler = None
        if cell.impl == "loop":
            self._build_loop(name)
            return
        with dev:  # initialise on the device: fast for the large models
            self.model = UViT(**self.kwargs)
        self.model.train()
        cfg = TrainConfig(fused_adamw=cell.fused and cell.impl == "ours", warmup_steps=0)
        if cell.impl == "original":  # §1.3, §4.4: fp32-cast attention, plain AdamW
            use_original_attention(self.model)
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                         eps=cfg.eps, weight_decay=cfg.weight_decay)  # fmt: skip
        else:
            self.opt = make_optimizer(self.model.parameters(), cfg, dev)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup_lambda(cfg.warmup_steps))
        self.ema = create_ema(self.model)
        self.net = (
            torch.compile(self.model, backend=run.args.compile_backend)
            if cell.compile
            else self.model
        )
        if cell.dtype == "fp16":
            self.scaler = torch.amp.GradScaler(dev.type)
        self.schedule = get_schedule(name)

    def _build_loop(self, schedule: str) -> None:
        """The training loop's own objects and `train_step` under an Accelerator (one per process)."""
        from accelerate import Accelerator

        precision = {"fp32": "no"}.get(self.cell.dtype, self.cell.dtype)
        if self.run.accelerator is None:
            self.run.accelerator = Accelerator(mixed_precision=precision, cpu=not self.run.cuda)
        acc = self.run.accelerator
        if acc.mixed_precision != precision:
            raise RuntimeError(
                f"accelerate state is fixed to {acc.mixed_precision} in this process"
            )
        model = {k: v for k, v in self.kwargs.items() if k not in ("use_checkpoint", "attention")}
        cfg = TrainConfig(model=model, schedule=schedule, batch_size=self.cell.batch,
                          mixed_precision=precision, fused_adamw=self.cell.fused, warmup_steps=0,
                          gradient_checkpointing=self.cell.ckpt, attention=self.cell.attention,
                          cpu=not self.run.cuda)  # fmt: skip
        self.objs = build_train_objects(cfg, acc)
        self.opt, self.model = self.objs.optimizer, self.objs.raw

    def step(self, i: int) -> torch.Tensor:
        if self.cell.impl == "loop":
            return train_step(self.objs, self.run.accelerator, self.x0, self.y, 0.9999)
        self.opt.zero_grad(set_to_none=True)
        self.gen.manual_seed(1000 + i)  # same noise and t at step i for every cell: same inputs
        with self.run.amp(self.cell.dtype):
            loss = noise_prediction_loss(self.net, self.x0, self.schedule, self.y, self.gen).mean()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        self.sched.step()
        if self.cell.impl == "original":  # per-parameter EMA update
            with torch.no_grad():
                for pe, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                    pe.mul_(0.9999).add_(p.detach(), alpha=1 - 0.9999)
        else:
            ema_update(self.ema, self.model, 0.9999)
        return loss.detach()

    def adamw(self) -> str:
        d = self.opt.defaults
        return "fused" if d.get("fused") else ("foreach" if d.get("foreach") else "default")


def train_cell(run: Run, cell: Cell) -> dict:
    if cell.attention == "xformers" and importlib.util.find_spec("xformers") is None:
        return {"status": "skipped: xformers not installed"}
    if cell.attention == "xformers" and not run.cuda:
        return {"status": "skipped: xformers needs CUDA"}
    _reset_peak(run)
    tr = Trainer(run, cell)
    try:
        t = time.perf_counter()
        tr.step(0).item()
        first = per = time.perf_counter() - t  # the first step includes compilation and autotuning
        for i in range(1, run.warmup + (1 if cell.compile else 0)):
            t = time.perf_counter()
            tr.step(i).item()
            per = time.perf_counter() - t
        n = min(run.max_steps, max(run.min_steps, math.ceil(run.args.min_time / max(per, 1e-6))))
        sync(run.device)
        t = time.perf_counter()
        losses = [tr.step(100 + i) for i in range(n)]
        sync(run.device)
        dt = (time.perf_counter() - t) / n
        loss = torch.stack(losses).float()
        flops = step_flops(tr.kwargs, cell.batch)
        peak = peak_flops(run.device, run.args.peak_tflops)
        row = {
            "img_per_s": round(cell.batch / dt, 2),
            "step_ms": round(1000 * dt, 2),
            "timed_steps": n,
            "first_step_s": round(first, 2),
            "tflops": round(flops / dt / 1e12, 2),
            "mfu_pct": round(100 * mfu(flops, 1 / dt, peak), 1) if peak else None,
            "loss": round(loss.mean().item(), 4),
            "adamw": tr.adamw(),
            **_peak(run),
        }
        if not torch.isfinite(loss).all():
            row["status"] = "error: non-finite loss"
        _calibrate(run, cell, flops / dt, first - dt)
        return row
    finally:
        del tr
        if cell.compile:
            torch._dynamo.reset()
        if run.accelerator is not None:  # it keeps references to what it prepared
            run.accelerator.free_memory()


def _calibrate(run: Run, cell: Cell, rate: float, compile_s: float) -> None:
    key = "original" if cell.impl == "original" else cell.dtype
    if not cell.compile and not cell.ckpt:
        run.rates[key] = rate
    if cell.compile and compile_s > 0:
        run.compile_factor = max(compile_s / COMPILE_GUESS_S[cell.model], 0.25)


def estimate_train(run: Run, cell: Cell) -> float:
    key = "original" if cell.impl == "original" else cell.dtype
    step = step_flops(run.model_kwargs(cell.model), cell.batch) * (4 / 3 if cell.ckpt else 1)
    step /= run.rates[key]
    n = run.warmup + min(run.max_steps, max(run.min_steps, math.ceil(run.args.min_time / step)))
    extra = COMPILE_GUESS_S[cell.model] * run.compile_factor if cell.compile else 0.0
    extra += 15.0 if cell.impl == "loop" else 0.0  # the loop builds the model on the CPU
    return run.estimate(4.0 + n * step + extra)


def train_grid(run: Run) -> list[list[Cell]]:
    """Cells in priority groups: the H/2 headline first, one-factor variations, compile last."""
    H, L, S = "U-ViT-H/2", "U-ViT-L/2", "U-ViT-S/2"
    hb, hb_ck, lb, sb = (4, 4, 4, 4) if run.dry else (64, 128, 128, 128)

    def variations(m: str, b: int) -> list[Cell]:
        return [Cell(m, b, dtype="fp16"), Cell(m, b, fused=False), Cell(m, b, dtype="fp32")]

    return [
        [Cell(H, hb), Cell(H, hb, "original", "fp16", fused=False),
         Cell(H, hb_ck, ckpt=True), Cell(H, hb_ck, "original", "fp16", fused=False, ckpt=True)],
        [Cell(S, sb), Cell(S, sb, "original", "fp16", fused=False), *variations(S, sb),
         Cell(S, sb, ckpt=True)],
        [*variations(H, hb), Cell(H, hb, attention="xformers"), Cell(H, hb, "loop"),
         Cell(H, hb_ck, dtype="fp16", ckpt=True)],
        [Cell(L, lb), Cell(L, lb, "original", "fp16", fused=False), *variations(L, lb),
         Cell(L, lb, ckpt=True)],
        [Cell(S, sb, compile=True), Cell(H, hb, compile=True), Cell(L, lb, compile=True),
         Cell(S, sb, compile=True, ckpt=True), Cell(H, hb_ck, compile=True, ckpt=True)],
    ]  # fmt: skip


# --- data loading ---------------------------------------------------------------------------------


def write_store(root: Path, kind: str, n: int, shape: tuple, num_classes: int, shard: int) -> Path:
    """A feature store of random items in the layout the training loop reads (docs/data.md)."""
    rng = np.random.default_rng(0)
    field, dtype = ("moments", "float16") if kind == "latent_moments" else ("x", "uint8")
    meta = {"kind": kind, "resolution": shape[-1] * (8 if kind == "latent_moments" else 1),
            "dataset": "gpu-benchmark (random)"}  # fmt: skip
    with FeatureStoreWriter(root, meta=meta, fields={field: (shape, dtype), "label": ((), "int64")},
                            shard_size=shard) as w:  # fmt: skip
        for lo in range(0, n, shard):
            m = min(shard, n - lo)
            if field == "x":
                items = rng.integers(0, 256, (m, *shape), dtype=np.uint8)
            else:
                items = rng.standard_normal((m, *shape), dtype=np.float32).astype(np.float16)
            w.add({field: items, "label": rng.integers(0, num_classes, m).astype(np.int64)})
    return root


class SortedBatchReader(Dataset):
    """Prototype, not library code: a whole batch per call, indices sorted and gathered with one
    fancy-index per shard from memmaps of the documented shard files, with the same per-item flip
    and label dropping as FeatureDataset. Measures what reading whole sorted batches would gain."""

    def __init__(self, root: Path, p_uncond: float, null_label: int | None, seed: int = 0):
        self.root, self.p_uncond, self.null_label = Path(root), p_uncond, null_label
        meta = FeatureStore(root).meta
        self.kind, self.shard_size, self.n = meta["kind"], meta["shard_size"], meta["num_rows"]
        self.field = "moments" if self.kind == "latent_moments" else "x"
        self.seed, self._maps, self._rng = seed, {}, None

    def __len__(self) -> int:
        return self.n

    def _map(self, shard: int, field: str) -> np.ndarray:
        if (shard, field) not in self._maps:
            path = self.root / f"shard-{shard:05d}.{field}.npy"
            self._maps[shard, field] = np.load(path, mmap_mode="r")
        return self._maps[shard, field]

    def __getitem__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        if self._rng is None:  # per worker process
            info = torch.utils.data.get_worker_info()
            self._rng = np.random.default_rng([self.seed, info.seed if info else 0])
        idx = np.sort(np.asarray(indices))
        shard, off = np.divmod(idx, self.shard_size)
        xs, ys = [], []
        for s in np.unique(shard):
            o = off[shard == s]
            xs.append(self._map(int(s), self.field)[o])
            ys.append(self._map(int(s), "label")[o])
        x, y = np.concatenate(xs), np.concatenate(ys)
        flip = self._rng.random(len(idx)) < 0.5
        if self.kind == "latent_moments":  # view 1 holds the moments of the flipped image
            x = torch.from_numpy(x[np.arange(len(x)), flip.astype(np.int64)].astype(np.float32))
        else:
            x = np.where(flip[:, None, None, None], x[..., ::-1], x)
            x = torch.from_numpy(x.astype(np.float32)) / 127.5 - 1.0
        if self.p_uncond > 0:
            y = np.where(self._rng.random(len(y)) < self.p_uncond, self.null_label, y)
        return x, torch.from_numpy(y.astype(np.int64))


def loader_row(run: Run, kind: str, reader: str, workers: int) -> dict:
    latent = kind == "latent_moments"
    root = run.tmp / f"store-{kind}"
    if not (
        root / "manifest.parquet"
    ).is_file():  # 256 px ImageNet latents (§4.5) / CIFAR-10 pixels
        side = (4 if latent else 8) if run.dry else 32
        shape = (2, 8, side, side) if latent else (3, side, side)
        write_store(
            root, kind, run.loader_items, shape, 1000 if latent else 10, 16 if run.dry else 1024
        )
    p_uncond, null = (0.1, 1000) if latent else (0.0, None)
    b, pin = run.loader_batch, run.cuda
    order = ResumableDataOrder(run.loader_items, b, 0, 1, seed=0)
    common = dict(num_workers=workers, pin_memory=pin, persistent_workers=workers > 0)
    if reader == "per-item":  # exactly the DataLoader settings of training/loop.py
        ds = FeatureDataset(root, random_flip=True, p_uncond=p_uncond, null_label=null, seed=0)
        loader = DataLoader(ds, batch_size=b, sampler=order, drop_last=True, **common)
    else:
        ds = SortedBatchReader(root, p_uncond, null)
        loader = DataLoader(ds, sampler=BatchSampler(order, b, drop_last=True), batch_size=None,
                            **common)  # fmt: skip
    it = iter(loader)
    try:
        for _ in range(2):  # worker start-up is not throughput
            next(it)[0].to(run.device, non_blocking=True)
        sync(run.device)
        t, n = time.perf_counter(), 0
        for _ in range(run.loader_batches):
            x, _ = next(it)
            x.to(run.device, non_blocking=True)
            n += len(x)
        sync(run.device)
        return {"samples_per_s": round(n / (time.perf_counter() - t), 1)}
    finally:
        del it, loader


# --- sampling -------------------------------------------------------------------------------------


def sampling_row(run: Run, name: str, sampler: str, batch: int, passes: str, dtype: str) -> dict:
    kwargs = run.model_kwargs(name)
    _reset_peak(run)
    torch.manual_seed(0)
    with run.device:
        model = UViT(**kwargs).eval()
    schedule = get_schedule(MODELS[name][1])
    null = kwargs["num_classes"] - 1  # the CFG null class (§1.1)
    g = torch.Generator(device=run.device).manual_seed(0)
    labels = torch.randint(0, null, (batch,), generator=g, device=run.device)
    c, s = kwargs["in_chans"], kwargs["img_size"]
    x_T = torch.randn((batch, c, s, s), generator=g, device=run.device)
    eps = make_eps_fn(model, schedule, labels, torch.full_like(labels, null), cfg_scale=0.4,
                      batched=passes == "batched")  # fmt: skip
    with torch.no_grad(), run.amp(dtype):
        sample(eps, x_T, schedule, sampler, 1)  # warm-up
        sync(run.device)
        t = time.perf_counter()
        out = sample(eps, x_T, schedule, sampler, run.sample_nfe)
        sync(run.device)
        dt = time.perf_counter() - t
    flops = 2 * count_flops(kwargs, batch) * 2 * run.sample_nfe  # 2 passes per NFE
    row = {
        "nfe": run.sample_nfe,
        "img_nfe_per_s": round(batch * run.sample_nfe / dt, 1),
        "tflops": round(flops / dt / 1e12, 2),
        "peak_alloc_MiB": _peak(run)["peak_alloc_MiB"],
    }
    if not torch.isfinite(out).all():
        row["status"] = "error: non-finite samples"
    return row


def estimate_sampling(run: Run, name: str, batch: int, dtype: str) -> float:
    flops = 2 * count_flops(run.model_kwargs(name), batch) * 2 * (run.sample_nfe + 1)
    return run.estimate(3.0 + flops / (0.7 * run.rates[dtype]))


# --- correctness ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def check_attention_model(run: Run) -> dict:
    """Whole U-ViT-S/2 (CIFAR-10) in fp32: SDPA output vs the explicit math attention."""
    kwargs = run.model_kwargs("U-ViT-S/2", attention="math")
    torch.manual_seed(0)
    with run.device:
        model = UViT(**kwargs).eval()
    g = torch.Generator(device=run.device).manual_seed(0)
    c, s = kwargs["in_chans"], kwargs["img_size"]
    x = torch.randn(4, c, s, s, generator=g, device=run.device)
    t = 999 * torch.rand(4, generator=g, device=run.device)
    with torch.no_grad(), _no_tf32():
        ref = model(x, t)
        model.set_attention("sdpa")
        diff = (model(x, t) - ref).abs().max().item()
    return {"value": diff, "passed": diff <= 1e-5}


def check_attention_module(run: Run, backend: str) -> dict:
    """One attention layer at U-ViT-H/2 size (D 1152, 16 heads, 258 tokens) in fp32 vs math."""
    if backend == "xformers" and (importlib.util.find_spec("xformers") is None or not run.cuda):
        why = "not installed" if importlib.util.find_spec("xformers") is None else "needs CUDA"
        return {"status": f"skipped: xformers {why}"}
    d, h, n = (48, 2, 6) if run.dry else (1152, 16, 258)
    torch.manual_seed(0)
    with run.device:
        attn = Attention(d, h, backend="math")
    x = torch.randn(8, n, d, device=run.device)
    with torch.no_grad(), _no_tf32():
        ref = attn(x)
        attn.set_backend(backend)
        diff = (attn(x) - ref).abs().max().item()
    return {"value": diff, "passed": diff <= 1e-5}


def check_original_dtype(run: Run) -> dict:
    """Which dtype SDPA computes in when handed float32 q/k/v under fp16 autocast (§1.3, §8 trap 10)."""
    q = torch.randn(2, 4, 16, 8, device=run.device)
    with torch.autocast(run.device.type, dtype=torch.float16):
        out = F.scaled_dot_product_attention(q, q, q)
    return {"value": str(out.dtype).removeprefix("torch."), "passed": None}


def check_finite(run: Run, dtype: str) -> dict:
    """U-ViT-H/2 (ImageNet 256 latent), batch 8, our step at full LR from step 1: all losses and
    weights finite after `finite_steps` updates; fp16 also reports the GradScaler's skipped steps."""
    tr = Trainer(run, Cell("U-ViT-H/2", 4 if run.dry else 8, dtype=dtype))
    try:
        losses = torch.stack([tr.step(i) for i in range(run.finite_steps)]).float()
        ok = bool(torch.isfinite(losses).all()) and all(
            bool(torch.isfinite(p).all()) for p in tr.model.parameters()
        )
        value = f"{run.finite_steps} steps, loss {losses[0].item():.4f} -> {losses[-10:].mean().item():.4f}"
        if tr.scaler is not None:  # no growth within 2000 steps: each halving is one skipped step
            value += f", scaler skipped {round(math.log2(65536.0 / tr.scaler.get_scale()))} steps"
        return {"value": value, "passed": ok}
    finally:
        del tr


def _latent_store_and_config(run: Run) -> tuple[dict, Path]:
    store = run.tmp / "accelerate-store"
    if not (store / "manifest.parquet").is_file():
        write_store(store, "latent_moments", 32, (2, 8, 8, 8), 10, 16)
    model = dict(img_size=8, patch_size=2, in_chans=4, embed_dim=64, depth=2, num_heads=2,
                 num_classes=11, conv=False)  # fmt: skip
    cfg = dict(model=model, schedule="discrete", batch_size=8, warmup_steps=1, n_steps=1,
               log_interval=1, save_interval=1, keep_last=2, p_uncond=0.1, fused_adamw=True,
               mixed_precision="fp16" if run.cuda else "bf16", cpu=not run.cuda,
               data={"path": str(store), "kind": "latent_moments", "num_workers": 1},
               run_dir=str(run.tmp / "accelerate-run"))  # fmt: skip
    return cfg, Path(cfg["run_dir"])


def check_accelerate_training(run: Run) -> dict:
    """`accelerate launch`, 1 process: train 1 step and save, resume to step 2, export; the export
    and the training state load strictly; under fp16 the GradScaler state is saved."""
    cfg, run_dir = _latent_store_and_config(run)
    launch_training(TrainConfig.from_dict(cfg), LaunchSpec(num_processes=1))
    final = launch_training(
        TrainConfig.from_dict({**cfg, "n_steps": 2}), LaunchSpec(num_processes=1)
    )
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["event"] == "start"]
    summary = json.loads((final / "summary.json").read_text())
    resumed = len(starts) == 2 and starts[1]["step"] == 1 and bool(starts[1]["resumed_from"])
    for which in ("ema", "raw"):
        load_uvit_from_checkpoint(final, which)  # strict load_state_dict inside
    state = load_training_state(find_latest_checkpoint(run_dir / "ckpts"))
    scaler = state["scaler"] is not None
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    passed = (resumed and summary["steps"] == 2 and summary["start_step"] == 1
              and state["state"]["step"] == 2 and (scaler or cfg["mixed_precision"] != "fp16")
              and all(math.isfinite(m["loss"]) for m in metrics))  # fmt: skip
    value = (f"{cfg['mixed_precision']}: resumed at {starts[-1]['step']} -> {summary['steps']}, "
             f"strict loads ok, scaler saved {scaler}, last images/s "
             f"{metrics[-1]['images_per_s']:.1f}")  # fmt: skip
    return {"value": value, "passed": passed}


def check_accelerate_sampling(run: Run) -> dict:
    """`accelerate launch`, 1 process: chunked guided DPM-Solver++ sampling from the export above."""
    cfg, run_dir = _latent_store_and_config(run)
    final = run_dir / "final"
    if not (final / "summary.json").is_file():
        return {"status": "skipped: needs the accelerate training check's export"}
    out = run.tmp / "accelerate-samples"
    spec = {"checkpoint": str(final), "which": "ema", "n_samples": 8, "batch_size": 4,
            "sampler": "dpm_solver_pp", "steps": 3, "cfg_scale": 0.4, "clip_x0": False, "seed": 0,
            "num_real_classes": 10, "null_label": 10, "device": str(run.device),
            "autoencoder": None, "decode_latents": False, "decode_batch_size": 50}  # fmt: skip
    payload = run.tmp / "sampling-payload.json"  # what `launch.run_parallel` writes
    payload.write_text(json.dumps({"spec": spec, "out": str(out), "contexts": None}))
    entry = "uvit_pipeline.sampling.generate:sample_part"
    run_under_accelerate(LaunchSpec(num_processes=1, cpu=not run.cuda), run.tmp,
                         "uvit_pipeline.launch",
                         ["_run", entry, "--payload", str(payload), *(["--cpu"] if not run.cuda else [])],
                         what="sampling child")  # fmt: skip
    images, labels = collect(out, 8, 4)
    passed = images.shape == (8, 4, 8, 8) and images.dtype == np.uint8 and labels.shape == (8,)
    return {
        "value": f"images {images.shape} {images.dtype}, labels {labels.shape}",
        "passed": passed,
    }


# --- plan ----------------------------------------------------------------------------------------


def plan(run: Run, results: Results) -> list[Task]:
    """All tasks in execution (priority) order; their rows are planned in table order."""
    sections = set(run.args.sections)
    groups = train_grid(run) if "train" in sections else []
    for group in groups:
        for cell in group:
            results.plan("train", cell.key, id=cell.key, model=cell.model, batch=cell.batch,
                         impl=cell.impl, dtype=cell.dtype, compile=cell.compile,
                         adamw="fused" if cell.fused else "default", ckpt=cell.ckpt,
                         attention="fp32-cast sdpa" if cell.impl == "original" else cell.attention)  # fmt: skip
    train = [[Task("train", c.key, lambda c=c: estimate_train(run, c), lambda c=c: train_cell(run, c))
              for c in g] for g in groups]  # fmt: skip

    loader = []
    if "loader" in sections:
        for kind in ("latent_moments", "pixels"):
            for reader in ("per-item", "sorted-batch"):
                for w in run.args.workers:
                    key = f"{kind} {reader} w{w}"
                    results.plan("loader", key, store=kind, reader=reader, workers=w,
                                 batch=run.loader_batch)  # fmt: skip
                    loader.append(Task("loader", key, lambda: run.estimate(8.0),
                                       lambda k=kind, r=reader, w=w: loader_row(run, k, r, w)))  # fmt: skip

    sampling, sampling_fp32 = [], []
    if "sampling" in sections:
        for name, sampler in (("U-ViT-H/2", "dpm_solver_pp"), ("U-ViT-L/2", "dpm_solver")):
            for b in run.sample_batches:
                for passes in ("separate", "batched"):
                    for dtype in ("bf16", "fp32"):
                        key = f"{name.removeprefix('U-ViT-')} {sampler} b{b} {passes} {dtype}"
                        results.plan("sampling", key, model=name, sampler=sampler, batch=b,
                                     cfg_passes=passes, dtype=dtype)  # fmt: skip
                        task = Task("sampling", key,
                                    lambda n=name, b=b, d=dtype: estimate_sampling(run, n, b, d),
                                    lambda n=name, s=sampler, b=b, p=passes, d=dtype:
                                    sampling_row(run, n, s, b, p, d))  # fmt: skip
                        (sampling if dtype == "bf16" else sampling_fp32).append(task)

    quick, slow = [], []
    if "correctness" in sections:
        checks = [
            ("attention fp32: U-ViT-S/2 sdpa vs math (max abs diff)", "<= 1e-5", quick,
             lambda: check_attention_model(run), 3.0),
            ("attention fp32: H/2-size layer sdpa vs math", "<= 1e-5", quick,
             lambda: check_attention_module(run, "sdpa"), 2.0),
            ("attention fp32: H/2-size layer xformers vs math", "<= 1e-5", quick,
             lambda: check_attention_module(run, "xformers"), 2.0),
            ("original path: SDPA dtype for fp32 q/k/v under fp16 autocast", "info", quick,
             lambda: check_original_dtype(run), 1.0),
            ("bf16: H/2 losses and weights finite", "all finite", slow,
             lambda: check_finite(run, "bf16"), 25.0),
            ("fp16 + GradScaler: H/2 losses and weights finite", "all finite", slow,
             lambda: check_finite(run, "fp16"), 25.0),
            ("accelerate launch, 1 process: train, save, resume, export, strict load", "pass", slow,
             lambda: check_accelerate_training(run), 60.0),
            ("accelerate launch, 1 process: chunked guided sampling", "pass", slow,
             lambda: check_accelerate_sampling(run), 30.0),
        ]  # fmt: skip
        for name, threshold, bucket, fn, est in checks:
            results.plan("correctness", name, check=name, threshold=threshold)
            bucket.append(Task("correctness", name, lambda e=est: run.estimate(e), fn))

    if "train" in sections:
        for key, target, threshold in (
            ("speed", "H/2 bf16 step vs original (fp16), equal batch, same card", ">= 1.3x"),
            ("mfu", "H/2 bf16 MFU (%)", ">= 45"),
            ("memory", "H/2 batch 128 with checkpointing, peak reserved MiB",
             f"<= {README_H2_CKPT_MB} (README, A100)"),
        ):  # fmt: skip
            results.plan("targets", key, target=target, threshold=threshold)
    g = train + [[]] * (5 - len(train))
    return [*quick, *g[0], *g[1], *loader, *slow, *sampling, *g[2], *g[3], *sampling_fp32, *g[4]]


# --- main ----------------------------------------------------------------------------------------


def environment(run: Run, argv: list[str]) -> dict:
    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    peak = peak_flops(run.device, run.args.peak_tflops)
    return {
        "_t0": time.monotonic(),
        "dry_run": run.dry,
        "device": device_name(run.device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "accelerate": version("accelerate"),
        "xformers": version("xformers"),
        "python": platform.python_version(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "peak_tflops": peak / 1e12 if peak else None,
        "compile_backend": run.args.compile_backend,
        "budget_s": run.args.budget_s,
        "argv": argv,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "state": "running",
    }


def _raise_budget(signum, frame):
    signal.setitimer(signal.ITIMER_REAL, 0)
    raise BudgetExceeded("time budget" if signum == signal.SIGALRM else "terminated")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="every step at toy size on the CPU")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    p.add_argument("--budget-s", type=float, default=None, help="default 390 (300 with --dry-run)")
    p.add_argument("--min-time", type=float, default=2.0, help="timed seconds per training cell")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="default 1 8 (1 2 dry)")
    p.add_argument(
        "--compile-backend", default=None, help="default inductor (eager with --dry-run)"
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="MFU denominator override")
    p.add_argument("--sections", nargs="+", default=list(COLUMNS)[1:], choices=list(COLUMNS)[1:])
    p.add_argument("--results-dir", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    args.device = args.device or ("cpu" if args.dry_run else "cuda")
    args.budget_s = args.budget_s or (300.0 if args.dry_run else 390.0)
    args.workers = args.workers or ([1, 2] if args.dry_run else [1, 8])
    args.compile_backend = args.compile_backend or ("eager" if args.dry_run else "inductor")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device here: run on a GPU machine, or use --dry-run")
    if args.device == "cpu":
        torch.set_num_threads(1)  # toy sizes: threads only add contention

    run = Run(args, Path(tempfile.mkdtemp(prefix="uvit-gpu-")))
    results = Results(args.results_dir, environment(run, sys.argv[1:] if argv is None else argv))
    tasks = plan(run, results)
    results.save()
    signal.signal(signal.SIGALRM, _raise_budget)
    signal.signal(signal.SIGTERM, _raise_budget)
    signal.setitimer(signal.ITIMER_REAL, args.budget_s)
    try:
        results.env["state"] = execute(run, results, tasks)
    except BudgetExceeded as e:  # arrived between tasks
        results.env["state"] = f"stopped: {e}"
        for section in results.rows.values():
            for row in section.values():
                if row["status"] == "not run":
                    row["status"] = "skipped: budget"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        results.save()
        shutil.rmtree(run.tmp, ignore_errors=True)
    print("\n" + results.text())
    print(f"\nwrote {results.json_path} and {results.md_path}")
    failed = [r["check"] for r in results.section("correctness") if r.get("passed") is False
              or r["status"].startswith("error")]  # fmt: skip
    if failed:
        print("FAILED checks: " + "; ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
