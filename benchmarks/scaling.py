"""Each heavy stage at 1 and 2 processes on the CPU, on the same data: items/s, CPU seconds per item
and parallel efficiency (items/s at P processes / (P x items/s at 1)).

The stage rows run the stage exactly as its Kedro node does: the same library call, through the one
harness of every data-parallel stage (`launch.run_parallel` with `LaunchSpec(num_processes=P,
cpu=True)`): at 1 process the entry runs in this process, at 2 under `accelerate launch`, and the
caller then merges the blocks here. Inputs are synthetic and every network is tiny and random, saved
to a temporary folder (nothing is downloaded):
  * features (autoencoder) / features (pixels): `data.extract_features` of a folder of 32 px JPEGs
    (an ingested ImageNet-style tree) through the demo-size autoencoder (`encoders.tiny_autoencoder`),
    or as pixels; one block per store shard;
  * text features (CLIP): `data.text_features.extract_text_features` of COCO-style captions through
    a 2-layer random CLIP text model (hidden 32, 77 tokens), as the text_features node;
  * reference statistics (demo classifier / FID Inception): `pipelines._references.
    reference_statistics` of the same JPEGs through the demo's classifier or the FID InceptionV3
    (pytorch-fid's architecture, random weights from a local file), in blocks of `--block` images
    (the pipeline's 1000 would leave a process idle at this size);
  * scoring (demo classifier / FID Inception): `pipelines._sampling.score_sample_dir` of a folder
    of sample chunks (random 32 px images, one block per chunk), the Fréchet distance included
    (for Inception a 2048 x 2048 matrix square root in this process: part of `fixed_s`);
  * sampling (U-ViT-demo, CFG): `pipelines._sampling.run_sampling` (entry `sampling.generate:
    sample_part`) of a random U-ViT-demo class model on 4x4x4 latents, DPM-Solver with 10 steps,
    guidance 0.4, decoded to 32 px by the demo-size autoencoder;
  * loader (item reads, before) / loader (batch reads): the training DataLoader over a latent store in
    the ImageNet-256 layout ((2, 8, 32, 32) float16 moments); each process reads its rank's slice of
    every global batch (`ResumableDataOrder`), item by item as training did before, or as
    `training.data.make_loader` does now (`BatchReads`: one sorted read per shard per batch); these
    run in plain worker processes (`multiprocessing`), timed after one warm-up batch.
Columns: `wall_s` is the whole stage as a user waits for it (process start, imports, network
loading, the merge: all included); `items_per_s` = items / wall_s and `efficiency` = items_per_s at
P / (P x items_per_s at 1); `cpu_s_per_item` counts this process and every child (getrusage of
self and of the children). `fixed_s` is the wall time of the same stage on one block (start-up
and loading, almost no compute), and `marginal_items_per_s` = (items - items of that one-block run)
/ (wall_s - fixed_s): the rate of the compute itself, with `marginal_efficiency` from it. On a
small machine the launch of 2 processes costs seconds, so the whole-stage efficiency of a short
stage is low while the marginal one shows how the compute itself scales.
Every process computes with one torch thread (OMP_NUM_THREADS=1), so P processes use P cores;
`cpu_busy` is the share of those cores the run got (CPU seconds / (wall seconds x P)): on a machine
busy with other work it is well below 1, and then CPU seconds per item is the figure to compare.

    python benchmarks/scaling.py                      # about 10 min on an idle 2-core machine
    python benchmarks/scaling.py --stages sampling scoring --processes 1 2 4
    python benchmarks/scaling.py --quick --stages text  # a smoke check of the script (seconds)
    python benchmarks/scaling.py --device cuda --processes 1 2 4 8   # a GPU machine, 1..G GPUs

With `--device cuda` every process of a harness stage computes on its own GPU (the loader rows stay
on the CPU; `--stages features text reference scoring sampling` leaves them out); the sizes are the
CPU's unless given (`--images`, `--samples`, ...).

Writes benchmarks/results/scaling.json (one entry per machine, and per device; rows of the stages
run replace the rows of those stages measured before; a --quick run has an entry of its own).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# one torch thread in this process and in every child of a launch: P processes use P cores
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import markdown_table, merge_json, text_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

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


# --- stages through the harness: prepare(cfg, tmp) -> {"full": run, "one": run}, where
# run(launcher, out) computes the stage into the new folder `out` with the launch `launcher` and
# returns the number of items; "one" is the same stage on one block (start-up and loading). --------


def _jpeg_tree(root: Path, n: int, size: int = 32) -> Path:
    """An ImageNet-style folder `root/train/<class>/<i>.jpg` of n random images in 10 classes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / "train" / f"n{i % 10:02d}"
        d.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
        (d / f"{i:06d}.jpg").write_bytes(buf.getvalue())
    return root


def _images(cfg: dict, tmp: Path):
    """(raw root, ingested manifest) of `cfg["images"]` JPEGs, made once per benchmark run."""
    from uvit_pipeline.data.ingest import scan_imagenet_folder

    root = tmp / "raw"
    if not root.exists():
        _jpeg_tree(root, cfg["images"])
        cfg["_manifest"] = scan_imagenet_folder(root, workers=1, progress=False)[0]
    return root, cfg["_manifest"]


def _vae(tmp: Path) -> str:
    from uvit_pipeline.encoders.autoencoder import tiny_autoencoder

    path = tmp / "vae"
    if not path.exists():
        tiny_autoencoder(seed=0).save_pretrained(path)  # KL-f8 shaped: 32 px -> 4x4x4 latents
    return str(path)


def _features(cfg: dict, tmp: Path, encoder: bool) -> dict[str, Callable]:
    from uvit_pipeline.data.extract import extract_features
    from uvit_pipeline.encoders import autoencoder as ae
    from uvit_pipeline.launch import LaunchSpec

    root, manifest = _images(cfg, tmp)
    block = cfg["block"]
    kw: dict = {"meta": {"kind": "pixels"}}
    if encoder:
        vae = _vae(tmp)
        sha = ae.state_dict_sha256(ae.load_autoencoder(vae))  # each process checks its copy
        kw = {
            "meta": {"kind": "latent_moments", "encoder_sha256": sha},
            "autoencoder": vae,
            "moments_shape": (8, 4, 4),
        }

    def run(rows):
        def go(launcher, out):
            extract_features(
                root, rows, out, crop="adm", resolution=32, shard_size=block,
                batch_size=cfg["batch"], workers=1, progress=False,
                launch=LaunchSpec.from_params(launcher), device=cfg["device"], **kw,
            )  # fmt: skip
            return len(rows)

        return go

    return {"full": run(manifest), "one": run(manifest.iloc[:block])}


def _coco_manifest(n: int):
    """A COCO-style manifest (one val2014 split) of n images with one caption each."""
    import pandas as pd

    rng = np.random.default_rng(0)
    words = ["a", "red", "cat", "on", "the", "green", "train", "past", "long", "platform"]
    return pd.DataFrame({
        "split": ["val2014"] * n,
        "image_id": np.arange(n, dtype=np.int64),
        "captions": [[" ".join(rng.choice(words, 12))] for _ in range(n)],
        "caption_ids": [[i] for i in range(n)],
        "label": np.zeros(n, np.int64),
    })  # fmt: skip


def _text(cfg: dict, tmp: Path) -> dict[str, Callable]:
    from uvit_pipeline.data.text_features import extract_text_features
    from uvit_pipeline.encoders import text
    from uvit_pipeline.launch import LaunchSpec

    sys.path.insert(0, str(ROOT))  # the tiny random CLIP text model of the tests
    from tests.conftest import save_tiny_clip

    clip = tmp / "clip"
    if not clip.exists():
        save_tiny_clip(clip)
    encoder = text.load_text_encoder(str(clip))  # the identity the store records
    block, n = cfg["block"], cfg["captions"]

    def run(rows):
        def go(launcher, out):
            extract_text_features(
                rows, out, encoder, encoder_spec=str(clip), batch_size=cfg["batch"],
                shard_size=block, prompts=["a red cat"], progress=False,
                launch=LaunchSpec.from_params(launcher), device=cfg["device"],
            )  # fmt: skip
            return len(rows)

        return go

    return {"full": run(_coco_manifest(n)), "one": run(_coco_manifest(block))}


def _network(tmp: Path, inception: bool) -> str:
    """A feature network folder as the fid_reference pipeline writes it (random weights)."""
    from uvit_pipeline.metrics.network import write_network_dir

    out = tmp / ("inception" if inception else "classifier")
    if (out / "network.json").exists():
        return str(out)
    out.mkdir()
    torch.manual_seed(0)
    if inception:
        import torchvision

        # pytorch-fid's checkpoint layout (torchvision keys, 1008 classes): only forward() differs
        net = torchvision.models.inception_v3(
            num_classes=1008, aux_logits=False, weights=None, init_weights=False
        )
        torch.save(net.state_dict(), out / "inception.pth")
        info = {"network": "inception_v3_fid", "weights": str(out / "inception.pth")}
    else:
        from uvit_pipeline.metrics.demo_classifier import DemoClassifier, save_classifier

        save_classifier(out / "classifier.safetensors", DemoClassifier(num_classes=10))
        info = {"network": "demo_classifier", "num_classes": 10}
    return str(write_network_dir(out, info))


def _reference(cfg: dict, tmp: Path, inception: bool) -> dict[str, Callable]:
    from uvit_pipeline.pipelines import _references

    root, manifest = _images(cfg, tmp)
    network = _network(tmp, inception)
    n = cfg["fid_images"] if inception else cfg["images"]
    block = cfg["fid_block"] if inception else cfg["block"]
    _references.REFERENCE_BLOCK_IMAGES = block  # blocks the processes can share at this size

    def run(limit):
        def go(launcher, out):
            _references.reference_statistics(
                str(root), manifest, network, batch_size=cfg["batch"], limit=limit,
                features={"crop": "adm", "resolution": 32},
                ingestion={"workers": 1, "source": "imagenet_folder", "split": "train"},
                device=cfg["device"], launcher=launcher, staging=str(out),
            )  # fmt: skip
            return limit

        return go

    return {"full": run(n), "one": run(block)}


def _sample_chunks(folder: Path, n: int, chunk: int, checkpoint: str) -> Path:
    """A sample folder as the sampling writes it: spec.json and chunks of random 32 px images."""
    from uvit_pipeline.sampling import SamplingSpec

    folder.mkdir(parents=True)
    SamplingSpec(checkpoint=checkpoint, n_samples=n, batch_size=chunk).to_json(folder / "spec.json")
    rng = np.random.default_rng(0)
    for k in range(-(-n // chunk)):
        m = min(chunk, n - k * chunk)
        np.savez(
            folder / f"chunk-{k:06d}.npz",
            images=rng.integers(0, 256, (m, 3, 32, 32), dtype=np.uint8),
            labels=rng.integers(0, 10, m),
        )
    return folder


def _scoring(cfg: dict, tmp: Path, inception: bool) -> dict[str, Callable]:
    from uvit_pipeline.pipelines._sampling import score_sample_dir

    network = _network(tmp, inception)
    d = 2048 if inception else len(_classifier_features(network))
    ref = {"mu": np.zeros(d), "sigma": np.eye(d), "network": json.loads(
        (Path(network) / "network.json").read_text())["network"]}  # fmt: skip
    n = cfg["fid_images"] if inception else cfg["score_images"]
    chunk = cfg["fid_block"] if inception else cfg["block"]
    checkpoint = _checkpoint(tmp)[0]
    name = "inception" if inception else "classifier"
    full = _sample_chunks(tmp / f"samples-{name}", n, chunk, checkpoint)
    one = _sample_chunks(tmp / f"samples-{name}-one", chunk, chunk, checkpoint)

    def run(samples, items):
        def go(launcher, out):
            score_sample_dir(
                str(samples), ref, network, None, None, device=cfg["device"], launcher=launcher,
                staging=str(out),
            )  # fmt: skip
            return items

        return go

    return {"full": run(full, n), "one": run(one, chunk)}


def _classifier_features(network: str) -> np.ndarray:
    from uvit_pipeline.metrics.network import load_feature_network

    _, features, _ = load_feature_network(network)
    return features(np.zeros((1, 3, 32, 32), np.uint8))[0]


def _checkpoint(tmp: Path) -> tuple[str, str]:
    """A random U-ViT-demo class model on 4x4x4 latents and the autoencoder that decodes them."""
    from uvit_pipeline.models import build_uvit
    from uvit_pipeline.training.checkpoint import export_final

    if (tmp / "ckpt").exists():
        return str(tmp / "ckpt"), _vae(tmp)
    kw = dict(img_size=4, in_chans=4, patch_size=1, num_classes=11)
    torch.manual_seed(0)
    model = build_uvit("U-ViT-demo", **kw)
    config = {
        "model_kwargs": model.config,
        "schedule": "vp_continuous",
        "p_uncond": 0.1,
        "data": {"kind": "latent_moments", "scale_factor": 0.18215},
    }
    return str(export_final(tmp / "ckpt", model, model, config, {"steps": 0})), _vae(tmp)


def _sampling(cfg: dict, tmp: Path) -> dict[str, Callable]:
    from uvit_pipeline.pipelines._sampling import run_sampling
    from uvit_pipeline.sampling import SamplingSpec

    checkpoint, vae = _checkpoint(tmp)
    chunk = cfg["sample_batch"]
    spec = SamplingSpec(
        checkpoint=checkpoint, n_samples=cfg["samples"], batch_size=chunk, sampler="dpm_solver",
        steps=10, cfg_scale=0.4, seed=0, num_real_classes=10, null_label=10, autoencoder=vae,
        device=cfg["device"],
    )  # fmt: skip

    def run(s):
        def go(launcher, out):
            out.mkdir(parents=True)
            run_sampling(s, out, launcher)
            return s.n_samples

        return go

    return {"full": run(spec), "one": run(spec.replace(n_samples=chunk))}


HARNESS: dict[str, Callable[[dict, Path], dict[str, Callable]]] = {
    "features (autoencoder)": lambda c, t: _features(c, t, True),
    "features (pixels)": lambda c, t: _features(c, t, False),
    "text features (CLIP)": _text,
    "reference statistics (demo classifier)": lambda c, t: _reference(c, t, False),
    "reference statistics (FID Inception)": lambda c, t: _reference(c, t, True),
    "scoring (demo classifier)": lambda c, t: _scoring(c, t, False),
    "scoring (FID Inception)": lambda c, t: _scoring(c, t, True),
    "sampling (U-ViT-demo, CFG)": _sampling,
}


def _cpu_s() -> float:
    """CPU seconds of this process and of every child it has waited for."""
    return sum(
        r.ru_utime + r.ru_stime
        for r in (resource.getrusage(resource.RUSAGE_SELF),
                  resource.getrusage(resource.RUSAGE_CHILDREN))
    )  # fmt: skip


def _launcher(world: int, device: str) -> dict:
    """The `launcher` parameter section of a launch of `world` processes on `device`."""
    return {"num_processes": world, "cpu": device == "cpu"}


def _timed(go: Callable, launcher: dict, out: Path) -> tuple[int, float, float]:
    """(items, wall seconds, CPU seconds) of one run of a stage with the launch `launcher`."""
    c, t = _cpu_s(), time.perf_counter()
    items = go(launcher, out)
    return items, time.perf_counter() - t, _cpu_s() - c


def measure_harness(stage: str, cfg: dict, tmp: Path, worlds: list[int]) -> list[dict]:
    """The stage at each number of processes: one untimed one-block run first (imports and page
    cache of this process), then per P a timed one-block run (`fixed_s`) and the full run."""
    from uvit_pipeline.pipelines._staging import release_run_locks

    runs = HARNESS[stage](cfg, tmp)
    work = tmp / "runs"

    def clear() -> None:
        """Release the staging folders' locks (as at the end of a Kedro run), remove the outputs
        (hundreds of MB at full size)."""
        release_run_locks()
        shutil.rmtree(work, ignore_errors=True)

    clear()
    runs["one"](_launcher(1, cfg["device"]), work / "warm-up")
    clear()
    rows = []
    for world in worlds:
        launcher = _launcher(world, cfg["device"])
        one_items, fixed, _ = _timed(runs["one"], launcher, work / f"one-{world}")
        items, wall, cpu = _timed(runs["full"], launcher, work / f"full-{world}")
        clear()
        # None where the full run was not measurably longer than the one-block run (noise)
        marginal = (items - one_items) / (wall - fixed) if wall > fixed else None
        rows.append({
            "stage": stage, "processes": world, "items": items, "wall_s": wall,
            "items_per_s": items / wall, "cpu_s_per_item": cpu / items,
            "cpu_busy": cpu / (wall * world), "fixed_s": fixed,
            "marginal_items_per_s": marginal,
        })  # fmt: skip
    return rows


# --- the training loader: plain worker processes --------------------------------------------------

LOADER = {
    "loader (item reads, before)": False,
    "loader (batch reads)": True,
}


def _worker(stage, cfg, rank, world, barrier, queue):
    torch.set_num_threads(1)
    try:
        run = _loader(cfg, rank, world, LOADER[stage])
        barrier.wait()
        t, c = time.time(), time.process_time()
        items = run()
        queue.put((rank, t, time.time(), time.process_time() - c, items, None))
    except BaseException as e:  # reported by the parent
        barrier.abort()
        queue.put((rank, 0.0, 0.0, 0.0, 0, repr(e)))


def measure_loader(stage: str, cfg: dict, world: int) -> dict:
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
        "stage": stage,
        "processes": world,
        "items": items,
        "wall_s": wall,
        "items_per_s": items / wall,
        "cpu_s_per_item": cpu / items,
        # the share of its cores the run got: far below 1 on a machine busy with other work, where
        # items/s and efficiency say more about the neighbours than about the stage
        "cpu_busy": cpu / (wall * world),
    }


GROUPS = {
    "loader": list(LOADER),
    "features": [k for k in HARNESS if k.startswith("features")],
    "text": [k for k in HARNESS if k.startswith("text")],
    "reference": [k for k in HARNESS if k.startswith("reference")],
    "scoring": [k for k in HARNESS if k.startswith("scoring")],
    "sampling": [k for k in HARNESS if k.startswith("sampling")],
}
# (full, --quick): sizes of the stages
SIZES = {
    "rows": (4096, 1024),  # latent store rows (32 KiB each)
    "loader_steps": (40, 4),
    # Each stage computes for about 10-30 s at 1 process on an idle core (the launch of 2 takes
    # about 5 s); --quick is a smoke check of the script only.
    "images": (20480, 32),  # 32 px JPEGs of the feature and reference stages (~850/s encoded)
    "captions": (32768, 32),  # ~2400/s through the tiny CLIP
    "score_images": (65536, 32),  # sample images scored by the demo classifier (~5000/s)
    "block": (512, 8),  # images or captions per block (a store shard, a sample chunk)
    "batch": (64, 8),
    "fid_images": (192, 4),  # images through FID Inception (299 px inside: ~0.15 CPU s each)
    "fid_block": (16, 2),
    "samples": (8192, 4),  # ~270/s
    "sample_batch": (64, 2),  # samples per chunk (a block)
}


def _efficiency(rows: list[dict]) -> None:
    """efficiency (and marginal_efficiency) of each row against the stage's 1-process row."""
    base = {r["stage"]: r for r in rows if r["processes"] == 1}
    for r in rows:
        b = base.get(r["stage"])
        if b is None:
            continue
        p = r["processes"]
        r["efficiency"] = r["items_per_s"] / (p * b["items_per_s"])
        if r.get("marginal_items_per_s") and b.get("marginal_items_per_s"):
            r["marginal_efficiency"] = r["marginal_items_per_s"] / (p * b["marginal_items_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stages", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    ap.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke check of the script")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where the harness stages compute: CPU processes, or one GPU each")  # fmt: skip
    ap.add_argument("--global-batch", type=int, default=256)
    for name, (full, _) in SIZES.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                        help=f"default {full}")  # fmt: skip
    ap.add_argument("--out", default="benchmarks/results/scaling.json")
    args = ap.parse_args()
    if 1 not in args.processes:
        ap.error("--processes must include 1: efficiency is measured against 1 process")
    if args.device == "cuda" and max(args.processes) > torch.cuda.device_count():
        ap.error(
            f"--processes {max(args.processes)} on cuda: {torch.cuda.device_count()} GPUs here"
        )
    torch.set_num_threads(1)
    cfg = {name: getattr(args, name) or sizes[int(args.quick)] for name, sizes in SIZES.items()}
    cfg["global_batch"] = 32 if args.quick else args.global_batch
    cfg["device"] = args.device
    tmp = Path(tempfile.mkdtemp(prefix="scaling_"))
    try:
        rows = []
        if "loader" in args.stages:
            cfg["store"] = str(_store(tmp / "store", cfg["rows"]))
            for stage in GROUPS["loader"]:
                for world in args.processes:
                    rows.append(measure_loader(stage, cfg, world))
                    print(text_table(rows[-1:], list(rows[-1])), flush=True)
        for group in args.stages:
            for stage in GROUPS[group] if group != "loader" else []:
                new = measure_harness(stage, cfg, tmp, args.processes)
                rows.extend(new)
                print(text_table(new, list(new[0])), flush=True)
        _efficiency(rows)
        cols = ["stage", "processes", "wall_s", "items_per_s", "cpu_s_per_item", "efficiency",
                "fixed_s", "marginal_items_per_s", "marginal_efficiency", "cpu_busy"]  # fmt: skip
        print()
        print(text_table(rows, cols))
        # rows of other stages measured earlier on this machine stay (one run per --stages group)
        # a --quick smoke check or a GPU run never replaces the CPU figures of this machine
        where = f"{os.cpu_count()} CPUs" if args.device == "cpu" else torch.cuda.get_device_name()
        key = f"{platform.node()} ({where}{', --quick' if args.quick else ''})"
        path = Path(args.out)
        old = json.loads(path.read_text()).get(key, {}) if path.is_file() else {}
        kept = [r for r in old.get("rows", []) if r["stage"] not in {r["stage"] for r in rows}]
        settings = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in
                    ("tmp", "store")}  # fmt: skip
        merge_json(path, key, {"settings": {**settings, "quick": args.quick}, "rows": kept + rows})
        print(f"\nall rows of this machine ({path}):")
        print(markdown_table(kept + rows, cols))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
