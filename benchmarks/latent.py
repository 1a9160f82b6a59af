"""Latent path throughput on this machine: extraction (decode+crop, VAE encode) and guided sampling.

Rows (docs/reference.md §4.5, §5.2, §5.3, §7.1):
  * data side: images/s to load + ADM-crop + convert to uint8 CHW, for PNG and JPEG files, at the demo
    size (32 px) and at ImageNet-like size (500x375 -> 256 crop);
  * VAE encode alone: the tiny test VAE at 32 px, and the real SD KL-f8 *architecture* (random weights,
    built from a config dict, no download) at 256 px for a handful of images;
  * sampling: tiny latent U-ViT with DPM-Solver++ and CFG (2 forwards per NFE) + tiny VAE decode;
  * multiply-add counts (FlopCounterMode on the meta device) of KL-f8 encode/decode and U-ViT-H/2, which
    docs/latent.md uses to extrapolate to a GPU.

    python benchmarks/latent.py            # ~1-2 min on 2 CPU cores
    python benchmarks/latent.py --sd-images 4 --device cuda

Writes benchmarks/results/latent.json (one entry per device, merged with earlier runs).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import merge_json, timed
from diffusers import AutoencoderKL
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from uvit_pipeline.data.images import center_crop_adm, load_rgb, to_uint8_chw
from uvit_pipeline.diffusion import get_schedule
from uvit_pipeline.encoders.autoencoder import decode_latents, encode_moments
from uvit_pipeline.models import OFFICIAL_CONFIGS, UViT, count_flops
from uvit_pipeline.sampling.generate import generate_samples

# Stable Diffusion v1 KL-f8 autoencoder in diffusers' config terms (§4.5: ch 128, ch_mult 1,2,4,4,
# 2 res blocks per level, z 4, GroupNorm 32).
SD_KL_F8 = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
)
TINY_VAE = dict(SD_KL_F8, block_out_channels=[8, 8, 8, 8], layers_per_block=1, norm_num_groups=4)
TINY_UVIT = dict(
    img_size=4, patch_size=2, in_chans=4, embed_dim=64, depth=4, num_heads=2, num_classes=11
)


def macs(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2  # FlopCounterMode counts 2 FLOPs per multiply-add


def bench_decode(tmp: Path, n: int, src_size: tuple[int, int], crop: int) -> list[dict]:
    """images/s for PIL load + ADM crop (§7.1) + uint8 CHW, single thread, PNG and JPEG (quality 90)."""
    rng = np.random.default_rng(0)
    rows = []
    # smooth random images: compress like photos rather than like noise
    base = rng.integers(0, 256, (n, src_size[1] // 8, src_size[0] // 8, 3), dtype=np.uint8)
    for fmt in ("png", "jpeg"):
        paths = []
        for i in range(n):
            img = Image.fromarray(base[i]).resize(src_size, Image.BICUBIC)
            path = tmp / f"{src_size[0]}_{i}.{fmt}"
            img.save(path, quality=90) if fmt == "jpeg" else img.save(path)
            paths.append(path)
        dt = timed(lambda ps=paths: [to_uint8_chw(center_crop_adm(load_rgb(p), crop)) for p in ps])
        rows.append(
            {
                "row": f"decode+crop {fmt.upper()} {src_size[0]}x{src_size[1]} -> {crop}",
                "images_per_s": n / dt,
                "n": n,
            }
        )
    return rows


@torch.no_grad()
def bench_encode(label: str, cfg: dict, res: int, n: int, device: torch.device) -> dict:
    """images/s of `encode_moments` alone (the node encodes originals + flips: 2 encodes per image)."""
    torch.manual_seed(0)
    vae = AutoencoderKL(**cfg).to(device).eval()
    x = torch.rand(n, 3, res, res, device=device) * 2 - 1
    dt = timed(lambda: encode_moments(vae, x), device=device)
    with torch.device("meta"):
        meta_vae = AutoencoderKL(**cfg)
    enc = macs(lambda: meta_vae.encode(torch.zeros(1, 3, res, res, device="meta")))
    dec = macs(lambda: meta_vae.decode(torch.zeros(1, 4, res // 8, res // 8, device="meta")))
    return {
        "row": f"VAE encode {label} {res}px (batch {n})",
        "images_per_s": n / dt,
        "n": n,
        "encode_gmacs_per_image": enc / 1e9,
        "decode_gmacs_per_image": dec / 1e9,
        "achieved_gmacs_per_s": enc * n / dt / 1e9,
    }


@torch.no_grad()
def bench_sampling(n: int, steps: int, device: torch.device) -> list[dict]:
    """Tiny latent U-ViT, DPM-Solver++ (discrete schedule, §5.2) with CFG s=0.4 (§4.3), then tiny decode."""
    torch.manual_seed(0)
    nnet = UViT(**TINY_UVIT).to(device).eval()
    vae = AutoencoderKL(**TINY_VAE).to(device).eval()
    schedule = get_schedule("discrete")
    labels = torch.arange(n) % 10
    forwards = {"n": 0}
    hook = nnet.register_forward_hook(lambda *a: forwards.__setitem__("n", forwards["n"] + 1))

    def run(decode):
        return generate_samples(
            nnet,
            schedule,
            n=n,
            batch_size=n,
            sample_shape=(4, 4, 4),
            sampler="dpm_solver_pp",
            steps=steps,
            labels=labels,
            null_label=10,
            cfg_scale=0.4,
            decode=decode,
            device=device,
            progress=False,
        )

    dt_sample = timed(
        lambda: run(None), device=device
    )  # latents only; the decoder is timed on its own below
    per_batch_forwards = forwards["n"] // 2  # timed() ran the batch twice (warm-up + timed)
    hook.remove()
    z = torch.randn(n, 4, 4, 4, device=device)
    dt_decode = timed(lambda: decode_latents(vae, z, 0.18215, chunk_size=50), device=device)
    return [
        {
            "row": f"sample tiny latent U-ViT, DPM-Solver++ {steps} steps, CFG (batch {n})",
            "images_per_s": n / dt_sample,
            "nfe": steps,
            "forwards_per_batch": per_batch_forwards,
            "images_x_nfe_per_s": n * steps / dt_sample,
            "uvit_gmacs_per_forward": count_flops(TINY_UVIT) / 1e9,
        },
        {"row": f"VAE decode tiny 32px (batch {n})", "images_per_s": n / dt_decode},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--sd-images", type=int, default=2, help="images for the 256 px KL-f8 encode row"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "latent.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(
        max(1, min(2, os.cpu_count() or 1)) if device.type == "cpu" else torch.get_num_threads()
    )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows += bench_decode(tmp, 200, (32, 32), 32)
        rows += bench_decode(tmp, 40, (500, 375), 256)
        rows.append(bench_encode("tiny (8,8,8,8)", TINY_VAE, 32, 64, device))
        rows.append(bench_encode("SD KL-f8 random weights", SD_KL_F8, 256, args.sd_images, device))
        rows += bench_sampling(16, 12, device)
    uvit_h = count_flops(OFFICIAL_CONFIGS["imagenet256_uvit_huge"]) / 1e9

    print(f"{'row':<72} {'images/s':>10}  extra")
    for r in rows:
        extra = {
            k: (float(f"{v:.4g}") if isinstance(v, float) else v)
            for k, v in r.items()
            if k not in ("row", "images_per_s")
        }
        print(f"{r['row']:<72} {r['images_per_s']:>10.2f}  {extra}")
    print(f"U-ViT-H/2 (imagenet256_uvit_huge) forward: {uvit_h:.1f} GMACs per image")

    entry = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "rows": rows,
        "uvit_h2_gmacs_per_forward": uvit_h,
    }
    merge_json(args.out, str(device), entry)


if __name__ == "__main__":
    main()
