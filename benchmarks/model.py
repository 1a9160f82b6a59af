"""Training-step throughput / peak memory / MFU of UViT per preset, attention backend, checkpointing, dtype.

One step = forward + noise-prediction MSE + backward + AdamW step (fused on CUDA, foreach on CPU)
+ EMA update (rate 0.9999, docs/reference.md §3). Usage (CPU, ~2-4 min):

    python benchmarks/model.py                       # U-ViT-demo and U-ViT-S/2 at 32x32, batch 8
    python benchmarks/model.py --backends sdpa math original_fp32_cast --steps 3  # + math path
    python benchmarks/model.py --presets U-ViT-L/2 --img-size 32 --in-chans 4 --batch-size 64 \
        --dtypes fp32 bf16 --compile                 # on a GPU

Backend "original_fp32_cast" re-implements the official attention path (docs/reference.md §1.3
"flash"): q,k,v materialised with einops.rearrange and cast to float32 before SDPA. It is a
measurement baseline only, patched onto the model's Attention modules (`_common.py`).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import device_name, text_table, use_original_attention, write_json

from uvit_pipeline.models import build_uvit, train_step_flops

BACKENDS = ("sdpa", "math", "xformers", "original_fp32_cast")
# Dense peak FLOP/s by GPU name fragment (vendor datasheets): (bf16 tensor core, fp32, tf32).
PEAK_FLOPS = {
    "H200": (989e12, 67e12, 495e12),
    "H100": (989e12, 67e12, 495e12),
    "A100": (312e12, 19.5e12, 156e12),
    "L4": (121e12, 30e12, 60e12),
}


def set_backend(model: torch.nn.Module, backend: str) -> None:
    if backend == "original_fp32_cast":
        use_original_attention(model)
    else:
        model.set_attention(backend)


class PeakMemory:
    """Peak memory of a measured region: CUDA allocator peak, else process RSS high-water mark."""

    def __init__(self, device: torch.device):
        self.device = device
        self.method = "cuda.max_memory_allocated" if device.type == "cuda" else self._cpu_method()

    @staticmethod
    def _cpu_method() -> str:
        try:  # Linux: writing 5 to clear_refs resets VmHWM, giving a per-config peak
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return "VmHWM (reset per config)"
        except OSError:
            return "ru_maxrss (process lifetime)"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.method.startswith("VmHWM"):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    def current_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.method.startswith("VmHWM"):
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        return kb / (2**20 if sys.platform == "darwin" else 1024)


def peak_flops(device: torch.device, dtype: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (bf16, fp32, tf32) in PEAK_FLOPS.items():
        if key in name:
            if dtype == "bf16":
                return bf16
            return tf32 if torch.backends.cuda.matmul.allow_tf32 else fp32
    return None


class Trainer:
    """One benchmark configuration: model, AdamW, EMA and a fixed batch; `step()` is one training step."""

    def __init__(self, args, preset, backend, ckpt, dtype, device):
        torch.manual_seed(0)
        self.args, self.device, self.key = args, device, (preset, backend, ckpt, dtype)
        kwargs = dict(img_size=args.img_size, in_chans=args.in_chans, num_classes=args.num_classes)
        self.model = build_uvit(
            preset, **kwargs, use_checkpoint=ckpt, checkpoint_every=args.checkpoint_every
        )
        self.model.to(device).train()
        set_backend(self.model, backend)
        self.params = list(self.model.parameters())
        self.ema = [p.detach().clone() for p in self.params]
        fused = device.type == "cuda"
        self.opt = torch.optim.AdamW(
            self.params, lr=2e-4, weight_decay=0.03, betas=(0.99, 0.999), fused=fused,
            foreach=not fused,
        )  # fmt: skip
        self.fwd = torch.compile(self.model) if args.compile else self.model
        B, C, S = args.batch_size, args.in_chans, args.img_size
        g = torch.Generator(device="cpu").manual_seed(1)
        self.x0 = torch.randn(B, C, S, S, generator=g).to(device)
        y = torch.randint(0, max(args.num_classes, 1), (B,), generator=g).to(device)
        self.y = y if args.num_classes > 0 else None
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
        self.times: list[float] = []
        self.warmup_s = 0.0
        self.loss = float("nan")

    def step(self) -> float:
        """Run one step (synchronised) and return its wall time in seconds."""
        t0 = time.perf_counter()
        B, x0 = self.x0.shape[0], self.x0
        t = torch.rand(B, device=self.device)
        noise = torch.randn_like(x0)
        xt = (1 - t).sqrt()[:, None, None, None] * x0 + t.sqrt()[:, None, None, None] * noise
        with torch.autocast(**self.autocast):
            loss = F.mse_loss(self.fwd(xt, 999 * t, self.y).float(), noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():  # EMA 0.9999 (§3)
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1 - 0.9999)
        self.loss = loss.item()  # also synchronises CUDA
        return time.perf_counter() - t0

    def warmup(self) -> None:
        self.warmup_s = sum(self.step() for _ in range(self.args.warmup))

    def done(self) -> bool:
        return len(self.times) >= self.args.steps and sum(self.times) >= self.args.min_time

    def row(self, peak_mb=None, over_start_mb=None) -> dict:
        preset, backend, ckpt, dtype = self.key
        # Median step time: robust to other processes competing for a shared CPU.
        steps_per_s = 1.0 / statistics.median(self.times)
        flops = train_step_flops(self.model, self.args.batch_size)
        peak = peak_flops(self.device, dtype, self.args.peak_tflops)
        return {
            "preset": preset,
            "backend": backend,
            "checkpointing": ckpt,
            "dtype": dtype,
            "compile": self.args.compile,
            "batch_size": self.args.batch_size,
            "img_size": self.args.img_size,
            "params_M": round(sum(p.numel() for p in self.params) / 1e6, 3),
            "images_per_s": round(steps_per_s * self.args.batch_size, 3),
            "step_ms": round(1000 / steps_per_s, 1),
            "timed_steps": len(self.times),
            "warmup_s": round(self.warmup_s, 2),
            "peak_mem_mb": peak_mb,
            # peak minus memory held before the timed steps (params, optimizer state, garbage)
            "peak_over_start_mb": over_start_mb,
            "achieved_tflops": round(flops * steps_per_s / 1e12, 4),
            "mfu": round(flops * steps_per_s / peak, 4) if peak else None,
            "final_loss": round(self.loss, 5),
        }


def run_one(args, preset, backend, ckpt, dtype) -> dict:
    """Time one configuration alone and measure its peak memory."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mem = PeakMemory(device)
    trainer = Trainer(args, preset, backend, ckpt, dtype, device)
    trainer.warmup()
    mem.reset()
    before = mem.current_mb()
    while not trainer.done():
        trainer.times.append(trainer.step())
    peak = mem.peak_mb()
    return trainer.row(round(peak, 1), round(peak - before, 1))


def run_interleaved(args, preset, ckpt, dtype) -> list[dict]:
    """Time all backends of one configuration round-robin in one process, so that load changes on a
    shared machine hit every backend alike. Memory is not measured (it would mix backends)."""
    device = torch.device(args.device)
    trainers = [Trainer(args, preset, b, ckpt, dtype, device) for b in args.backends]
    for tr in trainers:
        tr.warmup()
    while not all(tr.done() for tr in trainers):
        for tr in trainers:
            tr.times.append(tr.step())
    return [tr.row() for tr in trainers]


def print_table(rows: list[dict]) -> None:
    cols = ["preset", "backend", "checkpointing", "dtype", "batch_size", "images_per_s",
            "step_ms", "peak_mem_mb", "peak_over_start_mb", "achieved_tflops", "mfu"]  # fmt: skip
    print(text_table(rows, cols))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["U-ViT-demo", "U-ViT-S/2"])
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=-1, help="-1 = unconditional")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--backends", nargs="+", default=["sdpa", "original_fp32_cast"],
                   choices=BACKENDS)  # fmt: skip
    p.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=["off", "on"])
    p.add_argument("--checkpoint-every", type=int, default=1)
    p.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--steps", type=int, default=2, help="min. timed steps per configuration")
    p.add_argument("--min-time", type=float, default=1.0, help="keep timing until this many s")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the MFU denominator")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/model.json"))
    p.add_argument("--interleave", action="store_true",
                   help="time the backends round-robin in one process (fair speed comparison on a "
                   "busy machine; no memory figures)")  # fmt: skip
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="run all configs in this process (CPU peak memory then accumulates)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op CPU threads (default 1 on CPU: on a shared machine multi-threaded "
                   "timings swing 10-40x because of OpenMP barriers under preemption)")  # fmt: skip
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = 1 if args.device == "cpu" else torch.get_num_threads()
    torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    mem = PeakMemory(device)
    rows = []
    for preset in args.presets:
        for dtype in args.dtypes:
            for ckpt in args.checkpointing:
                if args.interleave:
                    new = run_interleaved(args, preset, ckpt == "on", dtype)
                else:
                    new = []
                    for backend in args.backends:
                        job = (args, preset, backend, ckpt == "on", dtype)
                        if args.isolate:  # fresh process: per-config peak RSS is not polluted
                            with mp.get_context("spawn").Pool(1) as pool:
                                new.append(pool.apply(run_one, job))
                        else:
                            new.append(run_one(*job))
                for row in new:
                    print(f"{preset} {row['backend']} ckpt={ckpt} {dtype}: "
                          f"{row['images_per_s']} img/s, peak {row['peak_mem_mb']} MB", flush=True)  # fmt: skip
                rows.extend(new)
    print()
    print_table(rows)
    env = {
        "torch": torch.__version__,
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "memory_method": "not measured (--interleave)"
        if args.interleave
        else mem.method + (", one process per config" if args.isolate else ""),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    write_json(args.output, {"env": env, "results": rows})
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
