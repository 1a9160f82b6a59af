"""Cost of the per-step stop check of training (`training.stop.StopOnSignal.poll`): one process
reads a flag; several combine their flags with an all-reduce every step (gloo on CPU here; on a
GPU, NCCL queues it on the stream and the result is read a step later).

    python benchmarks/stop_poll.py                  # 1 and 2 CPU processes, ~10 s
    python benchmarks/stop_poll.py --processes 1 2 4 --polls 5000

Writes benchmarks/results/stop_poll.json (keyed by number of processes).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _common import merge_json, text_table

from uvit_pipeline.launch import free_port
from uvit_pipeline.training.stop import StopOnSignal

RESULTS = Path(__file__).resolve().parent / "results" / "stop_poll.json"


def _time_polls(stop: StopOnSignal, polls: int) -> float:
    for _ in range(min(50, polls)):  # warm-up
        stop.poll()
    t0 = time.perf_counter()
    for _ in range(polls):
        stop.poll()
    return (time.perf_counter() - t0) / polls


def _rank(rank: int, world: int, port: int, polls: int, out) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    per_poll = _time_polls(StopOnSignal("cpu", world), polls)
    if rank == 0:
        out.put(per_poll)
    dist.destroy_process_group()


def measure(world: int, polls: int) -> float:
    """Seconds per poll on rank 0 with `world` CPU processes."""
    if world == 1:
        with StopOnSignal() as stop:
            return _time_polls(stop, polls * 10)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    mp.start_processes(
        _rank, args=(world, free_port(), polls, out), nprocs=world, start_method="spawn"
    )
    return out.get(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--polls", type=int, default=2000)
    args = ap.parse_args()
    rows = []
    for world in args.processes:
        per_poll = measure(world, args.polls)
        rows.append({"processes": world, "backend": "gloo" if world > 1 else "-",
                     "us_per_poll": per_poll * 1e6})  # fmt: skip
        merge_json(RESULTS, f"{platform.node()}:{world}", rows[-1])
    print(text_table(rows, ["processes", "backend", "us_per_poll"]))


if __name__ == "__main__":
    main()
