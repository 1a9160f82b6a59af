"""Training throughput (images/s) and peak memory through the real training step of `training/loop.py`.

Each row builds the model/EMA/AdamW/LR schedule with `build_train_objects` and times `train_step`
(forward + loss + backward + AdamW + scheduler + EMA, docs/reference.md §4.4) on random inputs, so data
loading is excluded. Usage (CPU, ~2-3 min on 2 cores):

    python benchmarks/train.py                                  # demo model and U-ViT-S/2 (CIFAR), CPU
    python benchmarks/train.py --device cuda --mixed-precision bf16 --batch-sizes 128 128

Writes benchmarks/results/train.json (one entry per device, merged with earlier runs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import device_name, merge_json
from accelerate import Accelerator

from uvit_pipeline.models import count_params, train_step_flops
from uvit_pipeline.training import TrainConfig
from uvit_pipeline.training.loop import build_train_objects, train_step
from uvit_pipeline.training.monitor import (
    peak_flops,
    peak_memory_bytes,
    reset_peak_memory,
    sync,
)

# (label, model dict): the 32x32 demo backbone and the CIFAR-10 U-ViT-S/2 config (§3.1).
MODELS = [
    ("U-ViT-demo 32px", {"preset": "U-ViT-demo", "img_size": 32, "in_chans": 3}),
    ("U-ViT-S/2 CIFAR-10", {"preset": "cifar10_uvit_small"}),
]


def bench(accelerator, label, model, batch, warmup, steps, mixed_precision, tmp) -> dict:
    cfg = TrainConfig.from_dict(
        dict(
            model=model,
            data={"path": str(tmp)},
            run_dir=str(tmp),
            batch_size=batch,
            warmup_steps=10,
            n_steps=steps,
            mixed_precision=mixed_precision,
            fused_adamw=accelerator.device.type == "cuda",
            cpu=accelerator.device.type == "cpu",
        )
    ).validate()
    objs = build_train_objects(cfg, accelerator)
    kw = objs.model_kwargs
    device = accelerator.device
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, kw["in_chans"], kw["img_size"], kw["img_size"], generator=g).to(device)
    for _ in range(warmup):
        train_step(objs, accelerator, x0, None, cfg.ema_rate)
    sync(device)
    reset_peak_memory(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = train_step(objs, accelerator, x0, None, cfg.ema_rate)
    loss.item()
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    peak = peak_flops(device)
    flops = train_step_flops(kw, batch)
    row = {
        "model": label,
        "params_M": count_params(kw) / 1e6,
        "batch": batch,
        "mixed_precision": mixed_precision,
        "s_per_step": dt,
        "images_per_s": batch / dt,
        "train_tflops_per_s": flops / dt / 1e12,
        "peak_mem_MiB": peak_memory_bytes(device) / 2**20,
        "mfu": flops / dt / peak if peak else None,
    }
    del objs
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    ap.add_argument("--batch-sizes", type=int, nargs=2, default=[32, 4], help="demo, S/2")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    args = ap.parse_args()

    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.device == "cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for (label, model), batch in zip(MODELS, args.batch_sizes, strict=True):
            rows.append(
                bench(
                    accelerator,
                    label,
                    model,
                    batch,
                    args.warmup,
                    args.steps,
                    args.mixed_precision,
                    tmp,
                )
            )
    name = device_name(accelerator.device)
    mem_note = (
        "CUDA max allocated" if args.device == "cuda" else "process RSS high-water (cumulative)"
    )

    precision = "fp32" if args.mixed_precision == "no" else args.mixed_precision
    print(f"\nTraining step on {name} ({precision}); peak memory = {mem_note}")
    print(
        f"{'model':<22}{'params':>9}{'batch':>7}{'s/step':>9}{'img/s':>9}{'TFLOP/s':>9}{'peak MiB':>10}{'MFU':>7}"
    )
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        print(
            f"{r['model']:<22}{r['params_M']:>8.2f}M{r['batch']:>7}{r['s_per_step']:>9.3f}"
            f"{r['images_per_s']:>9.1f}{r['train_tflops_per_s']:>9.3f}{r['peak_mem_MiB']:>10.0f}{mfu:>7}"
        )

    out = merge_json(
        args.out,
        args.device,
        {
            "device": name,
            "torch": torch.__version__,
            "warmup": args.warmup,
            "steps": args.steps,
            "memory": mem_note,
            "rows": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
