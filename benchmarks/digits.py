"""Does the U-ViT learn real images on a CPU? scikit-learn's 1,797 handwritten digits, end to end.

The digits are written as an ImageNet-layout folder (`train/digit<k>/*.png`, 16 px), scanned,
ADM-cropped and stored like any user folder, then a class-conditional U-ViT is trained on them:

  * pixel: pixels in [-1, 1], continuous VP SDE (docs/reference.md §4.1), DPM-Solver (§5.1);
  * latent: the demo autoencoder (f=4) trained on the same images, its moments, the discrete
    SD-beta schedule (§4.2) and DPM-Solver++ (§5.2), as `--env demo`.

A classifier fit on 1,500 of the real images (the demo classifier, metrics/demo_classifier.py;
its accuracy on the other 297 is reported) then labels samples of each class; the table gives
the fraction it recognises as the class asked for (chance 0.10), for the EMA and the raw weights,
at several training lengths (one run, continued), with the loss and the wall time.

    python benchmarks/digits.py                         # pixel, ~8 min on 2 CPU cores
    python benchmarks/digits.py --path latent
    python benchmarks/digits.py --steps 500,1000,2000 --grid grid.png

Writes benchmarks/results/digits.json (one entry per path and device, merged with earlier runs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import device_name, merge_json, text_table

from uvit_pipeline.data.digits import CLASS_NAMES, write_digits_folder
from uvit_pipeline.data.extract import extract_features, load_images
from uvit_pipeline.data.ingest import scan_imagenet_folder
from uvit_pipeline.diffusion import get_schedule
from uvit_pipeline.encoders.autoencoder import decode_latents, encode_moments
from uvit_pipeline.encoders.train_autoencoder import train_autoencoder
from uvit_pipeline.metrics.demo_classifier import classifier_accuracy, train_demo_classifier
from uvit_pipeline.sampling.generate import generate_samples
from uvit_pipeline.sampling.grid import labelled_grid
from uvit_pipeline.training import TrainConfig, load_uvit_from_checkpoint, train

HELD_OUT = 297  # real digits the classifier never sees (its accuracy on them is reported)

# The CPU recipes measured in docs/experiments.md ("Real images on a CPU"). Pixel: the digits at their
# native 8 px, patch 2 (12 values per token), no final conv; latent: the demo's recipe at 16 px.
RECIPES = {
    "pixel": dict(
        resolution=8,
        model=dict(
            img_size=8, in_chans=3, patch_size=2, embed_dim=64, depth=4, num_heads=2,
            num_classes=11, conv=False,
        ),
        schedule="vp_continuous",
        sampler="dpm_solver",
        batch_size=64,
    ),
    "latent": dict(
        resolution=16,
        model=dict(
            img_size=4, in_chans=4, patch_size=1, embed_dim=64, depth=4, num_heads=2,
            num_classes=11,
        ),
        schedule="discrete",
        sampler="dpm_solver_pp",
        batch_size=32,
    ),
}  # fmt: skip
COMMON = dict(
    lr=2e-3,
    betas=[0.9, 0.999],
    warmup_steps=100,
    ema_rate=0.995,
    p_uncond=0.1,
    log_interval=100,
    save_interval=100_000,
    cpu=True,  # a CPU run: fp32 and in-process data loading (the paper's defaults are for GPUs)
    mixed_precision="no",
)


def prepare(work: Path, path: str, resolution: int, ae_steps: int) -> dict:
    """Digits folder -> feature store (+ demo autoencoder for the latent path) and a classifier."""
    raw = write_digits_folder(work / "digits", image_size=resolution)
    manifest, _ = scan_imagenet_folder(raw, workers=1, progress=False)
    images = load_images(raw, manifest, crop="adm", resolution=resolution, workers=1)
    labels = manifest["label"].to_numpy()
    order = np.random.default_rng(0).permutation(len(images))
    fit, held = order[HELD_OUT:], order[:HELD_OUT]
    t = time.perf_counter()
    classifier, _ = train_demo_classifier(
        images[fit], labels[fit], num_classes=10, steps=600, batch_size=128, seed=0
    )
    out = dict(
        images=images,
        labels=labels,
        classifier=classifier,
        classifier_held_out=classifier_accuracy(classifier, images[held], labels[held]),
        classifier_s=time.perf_counter() - t,
        decode=None,
        scale_factor=None,
    )
    meta = {"kind": "pixels", "resolution": resolution, "crop": "adm"}
    kw: dict = {}
    if path == "latent":
        t = time.perf_counter()
        vae, report = train_autoencoder(
            images, steps=ae_steps, batch_size=32, lr=2e-3, kl_weight=1e-6, downsample=4,
            widths=[16, 32, 64], held_out=200, seed=0,
        )  # fmt: skip
        scale = report["scale_factor"]
        out.update(
            autoencoder_s=time.perf_counter() - t,
            autoencoder_psnr_db=report["held_out_psnr_db"],
            scale_factor=scale,
            decode=lambda z: decode_latents(vae, z, scale),
        )

        def encoder(batch: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(batch)).float() / 127.5 - 1.0
            return encode_moments(vae, x).float().numpy()

        meta = {**meta, "kind": "latent_moments", "scale_factor": scale}
        kw = dict(encoder=encoder, moments_shape=(8, resolution // 4, resolution // 4), flip=False)
    out["store"] = extract_features(
        raw, manifest, work / "store", meta=meta, crop="adm", resolution=resolution,
        shard_size=1024, workers=1, progress=False, **kw,
    )  # fmt: skip
    return out


def score(nnet, recipe: dict, prep: dict, n_per_class: int, steps: int, cfg: float, seed=0):
    """Class accuracy of n_per_class samples per digit, and the samples (uint8, class-major)."""
    y = torch.arange(10).repeat_interleave(n_per_class)
    mk = recipe["model"]
    samples = generate_samples(
        nnet.eval(), get_schedule(recipe["schedule"]), n=len(y), batch_size=250,
        sample_shape=(mk["in_chans"], mk["img_size"], mk["img_size"]), sampler=recipe["sampler"],
        steps=steps, labels=y, null_label=10, cfg_scale=cfg, decode=prep["decode"], seed=seed,
        progress=False,
    )  # fmt: skip
    return classifier_accuracy(prep["classifier"], samples, y.numpy()), samples


def _value(text: str):
    return (
        {"true": True, "false": False}.get(text.lower(), text) if not text.isdigit() else int(text)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", choices=sorted(RECIPES), default="pixel")
    ap.add_argument("--steps", default="1000,2000,3000,4000", help="training lengths to score")
    ap.add_argument("--samples-per-class", type=int, default=30)
    ap.add_argument("--sample-steps", type=int, default=20, help="sampler NFE")
    ap.add_argument("--cfg", type=float, default=3.0, help="guidance scale s (§4.3)")
    ap.add_argument("--ema-rate", type=float, default=COMMON["ema_rate"])
    ap.add_argument("--lr", type=float, default=COMMON["lr"])
    ap.add_argument("--model", default="", help="model overrides, e.g. embed_dim=128,depth=6")
    ap.add_argument("--ae-steps", type=int, default=800)
    ap.add_argument("--grid", type=Path, help="also write a labelled sample grid (PNG) here")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results/digits.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    recipe = dict(RECIPES[args.path])
    overrides = dict(kv.split("=") for kv in args.model.split(",") if kv)
    recipe["model"] = {**recipe["model"], **{k: _value(v) for k, v in overrides.items()}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        prep = prepare(work, args.path, recipe["resolution"], args.ae_steps)
        prep_s = time.perf_counter() - t0
        kind = "pixels" if args.path == "pixel" else "latent_moments"
        data = dict(
            path=str(prep["store"]), kind=kind, random_flip=False, num_workers=0
        )  # digits are not symmetric
        if prep["scale_factor"] is not None:
            data["scale_factor"] = prep["scale_factor"]
        train_s = 0.0
        for n in [int(s) for s in args.steps.split(",")]:
            config = TrainConfig.from_dict(
                dict(
                    COMMON, model=recipe["model"], schedule=recipe["schedule"], data=data,
                    batch_size=recipe["batch_size"],
                    n_steps=n, lr=args.lr, ema_rate=args.ema_rate, run_dir=str(work / "run"),
                )
            )  # fmt: skip
            t = time.perf_counter()
            final = train(config)  # continues the previous length's state
            train_s += time.perf_counter() - t
            summary = json.loads((final / "summary.json").read_text())
            row = dict(steps=n, train_s=round(train_s, 1), loss=summary.get("final_loss"))
            for which in ("ema", "raw"):
                t = time.perf_counter()
                acc, samples = score(
                    load_uvit_from_checkpoint(final, which), recipe, prep,
                    args.samples_per_class, args.sample_steps, args.cfg,
                )  # fmt: skip
                row[f"acc_{which}"] = acc
                row["sample_s"] = round(time.perf_counter() - t, 1)
                if which == "ema" and args.grid:
                    pick = samples.reshape(10, args.samples_per_class, *samples.shape[1:])[:, :8]
                    labelled_grid(
                        pick.reshape(-1, *samples.shape[1:]),
                        10,
                        CLASS_NAMES,
                        scale=64 // recipe["resolution"],
                    ).save(args.grid)
            rows.append(row)
            print(text_table([row], list(row)), flush=True)
    cols = ["steps", "train_s", "loss", "acc_ema", "acc_raw", "sample_s"]
    print(text_table(rows, cols))
    entry = dict(
        device=device_name(torch.device("cpu")),
        recipe={**COMMON, **recipe, "lr": args.lr, "ema_rate": args.ema_rate},
        cfg_scale=args.cfg,
        sample_steps=args.sample_steps,
        samples_per_class=args.samples_per_class,
        prepare_s=round(prep_s, 1),
        classifier_held_out=prep["classifier_held_out"],
        autoencoder_psnr_db=prep.get("autoencoder_psnr_db"),
        rows=rows,
    )
    print(
        f"classifier accuracy on {HELD_OUT} held-out real digits: {prep['classifier_held_out']:.3f}"
    )
    merge_json(args.out, f"{args.path} | {entry['device']}", entry)


if __name__ == "__main__":
    main()
