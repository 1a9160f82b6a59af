"""Each heavy stage at 1 and 2 processes on the CPU, on the same data: items/s, CPU seconds per item
and parallel efficiency (items/s at P processes / (P x items/s at 1)).

Every process uses one torch thread, so P processes use P cores; `cpu_busy` is the share of those
cores the run got (CPU seconds / (wall seconds x P)): on a machine busy with other work it is well
below 1, and then CPU seconds per item is the figure to compare. The stages are the library calls
the Kedro nodes make:
  * loader (item reads, before) / loader (batch reads): the training DataLoader over a latent store in
    the ImageNet-256 layout ((2, 8, 32, 32) float16 moments); each process reads its rank's slice of
    every global batch (`ResumableDataOrder`), item by item as training did before, or as
    `training.data.make_loader` does now (`BatchReads`: one sorted read per shard per batch);
  * sampling: `sampling.generate_to_dir` (the chunks rank r of P writes, as under `accelerate
    launch`) of a U-ViT-demo class model on 4x4x4 latents, DPM-Solver with 10 steps, guidance 0.4,
    decoded to 32 px by the demo-size autoencoder (random weights), after an untimed one-chunk
    warm-up per process (imports, kernels); each run still loads the checkpoint, as the stage does;
  * features (autoencoder) / features (pixels): `data.extract_features` of synthetic 32 px images
    through the demo-size autoencoder (`encoders.tiny_autoencoder`, random weights) or as pixels;
  * feature network: `metrics.demo_classifier.classifier_features` (the demo's FID network) and the
    FID InceptionV3 architecture (pytorch-fid's, random weights: no download) on 32 px images.
Feature extraction, the feature network and FID statistics run in one process today: those rows are
measured at 1 process only and say so.

    python benchmarks/scaling.py                      # ~1-2 min on 2 cores
    python benchmarks/scaling.py --stages loader --processes 1 2 4

Writes benchmarks/results/scaling.json (one entry per machine).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from _common import markdown_table, merge_json, text_table

ROW = (2, 8, 32, 32)  # ImageNet-256 latent moments (image + flip), float16: 32 KiB per row


def _store(root: Path, n: int) -> Path:
    from uvit_pipeline.data import FeatureStoreWriter

    rng = np.random.default_rng(0)
    fields = {"moments": (ROW, "float16"), "label": ((), "int64")}
    with FeatureStoreWriter(root, {"kind": "latent_moments"}, fields, shard_size=1024) as w:
        for lo in range(0, n, 1024):
            k = min(1024, n - lo)
            moments = rng.standard_normal((k, *ROW), dtype=np.float32).astype(np.float16)
            w.add({"moments": moments, "label": rng.integers(0, 1000, k)})
    return root


# --- stages: setup(cfg, rank, world) -> state (untimed); run(state) -> items (timed) --------------


def _loader(cfg, rank, world, batched: bool):
    from torch.utils.data import BatchSampler, DataLoader

    from uvit_pipeline.data import BatchReads, FeatureDataset, FeatureStore
    from uvit_pipeline.training.data_order import ResumableDataOrder

    store = FeatureStore(cfg["store"])
    ds = FeatureDataset(store, random_flip=True, p_uncond=0.1, null_label=1000, seed=rank)
    order = ResumableDataOrder(len(store), cfg["global_batch"], rank, world, seed=0)
    per_rank = cfg["global_batch"] // world
    if batched:
        loader = DataLoader(
            BatchReads(ds), batch_size=None, sampler=BatchSampler(order, per_rank, True)
        )
    else:
        loader = DataLoader(ds, batch_size=per_rank, sampler=order, drop_last=True)
    steps = cfg["loader_steps"]
    next(iter(loader))  # maps opened, pages touched once

    def run():
        it = iter(loader)
        for _ in range(steps):
            next(it)
        return steps * per_rank

    return run


def _sampling(cfg, rank, world):
    from uvit_pipeline.sampling import SamplingSpec
    from uvit_pipeline.sampling.generate import generate_to_dir

    out = Path(cfg["tmp"]) / f"samples-{world}"
    spec = SamplingSpec(
        checkpoint=cfg["checkpoint"], n_samples=cfg["samples"], batch_size=cfg["sample_batch"],
        sampler="dpm_solver", steps=cfg["sample_steps"], cfg_scale=0.4, seed=0,
        num_real_classes=10, null_label=10, autoencoder=cfg["autoencoder"],
    )  # fmt: skip

    # warm-up, untimed: imports (diffusers), kernels, page cache: one chunk into another folder
    warm = spec.replace(n_samples=cfg["sample_batch"])
    generate_to_dir(warm, Path(cfg["tmp"]) / f"warm-{world}-{rank}", 0, 1, progress=False)

    def run():
        generate_to_dir(spec, out, rank, world, progress=False)
        n_chunks = -(-cfg["samples"] // cfg["sample_batch"])
        mine = range(rank, n_chunks, world)
        return sum(min(cfg["sample_batch"], cfg["samples"] - k * cfg["sample_batch"]) for k in mine)

    return run


def _features(cfg, rank, world, encoder: bool):
    import pandas as pd

    from uvit_pipeline.data.extract import extract_features
    from uvit_pipeline.encoders.autoencoder import encode_moments, tiny_autoencoder

    n = cfg["images"]
    images = np.random.default_rng(0).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    manifest = pd.DataFrame({"index": np.arange(n), "label": np.zeros(n, np.int64)})
    enc = None
    if encoder:
        vae = tiny_autoencoder().eval()

        @torch.no_grad()
        def enc(batch):
            x = torch.from_numpy(np.ascontiguousarray(batch)).float() / 127.5 - 1.0
            return encode_moments(vae, x).numpy()

    out = Path(cfg["tmp"]) / f"features-{int(encoder)}-{world}-{rank}"

    def run():
        extract_features(
            cfg["tmp"], manifest, out, meta={"kind": "bench"}, crop="adm", resolution=32,
            shard_size=256, batch_size=64, workers=1, array_source=images, encoder=enc,
            progress=False, moments_shape=(8, 4, 4),
        )  # fmt: skip
        return n

    return run


def _feature_network(cfg, rank, world, inception: bool):
    n = cfg["fid_images"] if inception else cfg["images"]
    images = np.random.default_rng(0).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    if inception:
        from pytorch_fid import inception as fid_inception

        from uvit_pipeline.metrics.fid import inception_activations

        # the architecture only (random weights): load_state_dict is skipped, nothing is fetched
        with (
            mock.patch.object(fid_inception, "load_state_dict_from_url", lambda *a, **k: {}),
            mock.patch.object(torch.nn.Module, "load_state_dict", lambda *a, **k: None),
        ):
            model = fid_inception.InceptionV3([3]).eval()
        return lambda: len(inception_activations(images, model, batch_size=10))
    from uvit_pipeline.metrics.demo_classifier import DemoClassifier, classifier_features

    model = DemoClassifier(num_classes=10).eval()
    return lambda: len(classifier_features(model, images, batch_size=256))


STAGES = {
    "loader (item reads, before)": (lambda c, r, w: _loader(c, r, w, False), True),
    "loader (batch reads)": (lambda c, r, w: _loader(c, r, w, True), True),
    "sampling (U-ViT-demo, CFG)": (_sampling, True),
    "features (autoencoder)": (lambda c, r, w: _features(c, r, w, True), False),
    "features (pixels)": (lambda c, r, w: _features(c, r, w, False), False),
    "feature network (demo classifier)": (lambda c, r, w: _feature_network(c, r, w, False), False),
    "feature network (FID Inception)": (lambda c, r, w: _feature_network(c, r, w, True), False),
}
GROUPS = {
    "loader": [k for k in STAGES if k.startswith("loader")],
    "sampling": [k for k in STAGES if k.startswith("sampling")],
    "features": [k for k in STAGES if k.startswith("features")],
    "network": [k for k in STAGES if k.startswith("feature network")],
}


def _worker(stage, cfg, rank, world, barrier, queue):
    torch.set_num_threads(1)
    try:
        run = STAGES[stage][0](cfg, rank, world)
        barrier.wait()
        t, c = time.time(), time.process_time()
        items = run()
        queue.put((rank, t, time.time(), time.process_time() - c, items, None))
    except BaseException as e:  # reported by the parent
        barrier.abort()
        queue.put((rank, 0.0, 0.0, 0.0, 0, repr(e)))


def measure(stage: str, cfg: dict, world: int) -> dict:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(world), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(stage, cfg, r, world, barrier, queue))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    errors = [e for *_, e in results if e]
    if errors:
        raise RuntimeError(f"{stage} at {world} processes: {errors[0]}")
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    items = sum(r[4] for r in results)
    cpu = sum(r[3] for r in results)
    return {
        "items": items,
        "wall_s": wall,
        "items_per_s": items / wall,
        "cpu_s_per_item": cpu / items,
        # the share of its cores the run got: far below 1 on a machine busy with other work, where
        # items/s and efficiency say more about the neighbours than about the stage
        "cpu_busy": cpu / (wall * world),
    }


def _checkpoint(tmp: Path) -> tuple[str, str]:
    from uvit_pipeline.encoders.autoencoder import tiny_autoencoder
    from uvit_pipeline.models import build_uvit
    from uvit_pipeline.training.checkpoint import export_final

    kw = dict(img_size=4, in_chans=4, patch_size=1, num_classes=11)
    torch.manual_seed(0)
    model = build_uvit("U-ViT-demo", **kw)
    config = {
        "model_kwargs": model.config,
        "schedule": "vp_continuous",
        "p_uncond": 0.1,
        "data": {"kind": "latent_moments", "scale_factor": 0.18215},
    }
    tiny_autoencoder().save_pretrained(tmp / "vae")  # decodes the 4x4x4 latents to 32 px
    return str(export_final(tmp / "ckpt", model, model, config, {"steps": 0})), str(tmp / "vae")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stages", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    ap.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rows", type=int, default=4096, help="latent store rows (32 KiB each)")
    ap.add_argument("--global-batch", type=int, default=256)
    ap.add_argument("--loader-steps", type=int, default=40)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--images", type=int, default=512, help="images of the feature stages")
    ap.add_argument("--fid-images", type=int, default=8, help="images through FID Inception")
    ap.add_argument("--out", default="benchmarks/results/scaling.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scaling_"))
    try:
        cfg = {
            "tmp": str(tmp),
            "global_batch": args.global_batch,
            "loader_steps": args.loader_steps,
            "samples": args.samples,
            "sample_batch": 16,
            "sample_steps": 10,
            "images": args.images,
            "fid_images": args.fid_images,
        }
        if "loader" in args.stages:
            cfg["store"] = str(_store(tmp / "store", args.rows))
        if "sampling" in args.stages:
            cfg["checkpoint"], cfg["autoencoder"] = _checkpoint(tmp)
        rows = []
        for group in args.stages:
            for stage in GROUPS[group]:
                multi = STAGES[stage][1]
                base = None
                for world in args.processes if multi else [1]:
                    r = measure(stage, cfg, world)
                    base = base or r["items_per_s"]
                    eff = r["items_per_s"] / (world * base)
                    rows.append({"stage": stage, "processes": world, **r, "efficiency": eff})
                    print(text_table(rows[-1:], list(rows[-1])), flush=True)
                if not multi:
                    rows[-1]["note"] = "one process today"
        cols = [
            "stage", "processes", "items_per_s", "cpu_s_per_item", "efficiency", "cpu_busy", "note"
        ]  # fmt: skip
        print()
        print(text_table(rows, cols))
        # rows of other stages measured earlier on this machine stay (one run per --stages group)
        key, path = f"{platform.node()} ({os.cpu_count()} CPUs)", Path(args.out)
        old = json.loads(path.read_text()).get(key, {}) if path.is_file() else {}
        kept = [r for r in old.get("rows", []) if r["stage"] not in {r["stage"] for r in rows}]
        settings = {k: v for k, v in cfg.items() if k not in ("tmp", "store", "checkpoint")}
        settings.pop("autoencoder", None)
        merge_json(path, key, {"settings": settings, "rows": kept + rows})
        print(f"\nall rows of this machine ({path}):")
        print(markdown_table(kept + rows, cols))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
