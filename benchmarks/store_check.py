"""Start-up content check of a feature store: the full sha256 every start used to run
(`FeatureStore.verify`) vs the quick check it runs now (`FeatureStore.check`: sizes, manifest,
sha256 of the first/middle/last 64 KiB of each shard file, recorded when the store was written).

A latent-moments store of `--mib` MiB (ImageNet-256 layout: (2, 8, 32, 32) float16 rows = 32 KiB,
shards of 1024 rows = 32 MiB, as extraction writes them) is written to a temporary folder, then each
check is timed warm (files in the page cache) and cold (this store's pages evicted with
posix_fadvise(DONTNEED); other processes' caches are untouched).

    python benchmarks/store_check.py               # 320 MiB, ~30 s on 2 CPU cores
    python benchmarks/store_check.py --mib 1024 --dir /big/tmp

Writes benchmarks/results/store_check.json (keyed by store size).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import merge_json, text_table

from uvit_pipeline.data import FeatureStore, FeatureStoreWriter

ROW = (2, 8, 32, 32)  # ImageNet-256 latent moments of an image and its flip, float16
SHARD = 1024


def write_store(root: Path, mib: int) -> int:
    n = mib * (1 << 20) // (int(np.prod(ROW)) * 2)
    rng = np.random.default_rng(0)
    fields = {"moments": (ROW, "float16"), "label": ((), "int64")}
    meta = {"kind": "latent_moments", "resolution": 256}
    with FeatureStoreWriter(root, meta, fields, shard_size=SHARD) as w:
        for lo in range(0, n, SHARD):
            k = min(SHARD, n - lo)
            w.add(
                {
                    "moments": rng.standard_normal((k, *ROW), dtype=np.float32).astype(np.float16),
                    "label": np.zeros(k, np.int64),
                }
            )
    return n


def evict(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def measure(store: FeatureStore, method: str, cold: bool) -> dict:
    if cold:
        evict(store.root)
    else:
        getattr(store, method)(progress=False)  # warm the cache
    t, c = time.perf_counter(), time.process_time()
    getattr(store, method)(progress=False)
    return {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=320, help="store size in MiB")
    ap.add_argument("--dir", default=None, help="where the temporary store is written")
    ap.add_argument("--out", default="benchmarks/results/store_check.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="store_check_", dir=args.dir))
    try:
        t = time.perf_counter()
        n = write_store(tmp / "store", args.mib)
        write_s = time.perf_counter() - t
        store = FeatureStore(tmp / "store")
        rows = []
        for method, what in (("verify", "full sha256 (before: every start)"), ("check", "quick")):
            for cold in (False, True):
                r = measure(store, method, cold)
                rows.append({"check": what, "cache": "cold" if cold else "warm", **r})
        print(text_table(rows, ["check", "cache", "wall_s", "cpu_s"]))
        shards = -(-n // SHARD)
        print(f"store: {n} rows, {shards} shards, {args.mib} MiB; written in {write_s:.1f} s")
        merge_json(
            args.out,
            f"{args.mib}MiB",
            {
                "rows": n,
                "shards": shards,
                "mib": args.mib,
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "results": rows,
            },
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
