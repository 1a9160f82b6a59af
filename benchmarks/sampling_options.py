"""Guided sampling under `evaluation.mixed_precision` x `evaluation.cfg_batched`, on this machine.

Same model, seed and labels for every row: `generate_samples` with DPM-Solver, `--steps` steps and
guidance s = 0.4 (two network passes per step, or one of 2B). Rows: U-ViT-demo (4x4x4 latents,
patch 1, the demo environments' backbone) and U-ViT-S/2 on 8x8x4 latents (the MS-COCO backbone at a
CPU-sized resolution), random weights, one torch thread on the CPU. CPU time is this process's.

    python benchmarks/sampling_options.py            # ~1 min on a CPU core
    python benchmarks/sampling_options.py --device cuda --batch 50 --steps 50

Writes benchmarks/results/sampling_options.json (one entry per device).
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import device_name, merge_json, sync, text_table

from uvit_pipeline.diffusion import VPSDE
from uvit_pipeline.models import build_uvit
from uvit_pipeline.sampling.generate import generate_samples

MODELS = {
    "U-ViT-demo 4x4x4": dict(preset="U-ViT-demo", img_size=4, in_chans=4, patch_size=1),
    "U-ViT-S/2 8x8x4": dict(preset="U-ViT-S/2", img_size=8, in_chans=4),
}


def run(model, device, batch, steps, precision, batched, repeats) -> dict:
    labels = torch.arange(batch) % 10
    kw = dict(
        n=batch, batch_size=batch, sample_shape=(model.in_chans, model.img_size, model.img_size),
        sampler="dpm_solver", steps=steps, labels=labels, null_label=10, cfg_scale=0.4, seed=0,
        device=device, progress=False, mixed_precision=precision, cfg_batched=batched,
    )  # fmt: skip
    generate_samples(model, VPSDE(), **{**kw, "steps": 2})  # warm-up
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        generate_samples(model, VPSDE(), **kw)
        sync(device)
        best_wall = min(best_wall, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    return {"images_per_s": batch / best_wall, "wall_s": best_wall, "cpu_s": best_cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--precisions", nargs="+", default=["no", "bf16"])
    ap.add_argument("--out", default="benchmarks/results/sampling_options.json")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    rows = []
    for name, kw in MODELS.items():
        torch.manual_seed(0)
        model = build_uvit(kw.pop("preset"), num_classes=11, **kw).to(device).eval()
        for precision in args.precisions:
            for batched in (False, True):
                r = run(model, device, args.batch, args.steps, precision, batched, args.repeats)
                rows.append(
                    {"model": name, "mixed_precision": precision, "cfg_batched": batched, **r}
                )
                print(text_table(rows[-1:], list(rows[-1])), flush=True)
    cols = ["model", "mixed_precision", "cfg_batched", "images_per_s", "wall_s", "cpu_s"]
    print(text_table(rows, cols))
    merge_json(
        args.out,
        device_name(device),
        {
            "batch": args.batch,
            "steps": args.steps,
            "cfg_scale": 0.4,
            "threads": args.threads,
            "rows": rows,
        },  # fmt: skip
    )


if __name__ == "__main__":
    main()
