"""Sample generation for evaluation (§5.3): noise -> sampler -> (VAE decode) -> uint8 images.

Samples are produced in fixed chunks; chunk k has its own seed (seed, k), so the images do not depend on
how many processes share the work, and each chunk is written atomically to `chunk-<k>.npz` so an
interrupted 50K-sample run resumes with the chunks that are missing. `python -m
uvit_pipeline.sampling --spec spec.json` is the `accelerate launch` entry point: rank r makes
chunks k ≡ r (mod world size).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from uvit_pipeline._io import atomic_write
from uvit_pipeline.diffusion import get_schedule, make_eps_fn, sample


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 exactly as torchvision's save_image: floor(255·clamp(½(v+1)) + 0.5) (§5.3)."""
    return images.float().add(1).mul(0.5).clamp(0, 1).mul(255).add(0.5).floor().to(torch.uint8)


@torch.no_grad()
def generate_samples(
    nnet: torch.nn.Module,
    schedule,
    *,
    n: int,
    batch_size: int,
    sample_shape: tuple[int, int, int],
    sampler: str,
    steps: int,
    labels: torch.Tensor | None = None,
    null_label: int | None = None,
    cfg_scale: float = 0.0,
    clip_x0: bool = False,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Generate ``n`` images as uint8 (n, 3, H, W). ``labels`` (n,) for class-conditional models;
    ``decode`` maps latents to [-1, 1] images for latent models."""
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for lo in tqdm(range(0, n, batch_size), desc="sampling", unit="batch", disable=not progress):
        b = min(batch_size, n - lo)
        x_T = torch.randn((b, *sample_shape), generator=gen).to(device)
        cond = labels[lo : lo + b].to(device) if labels is not None else None
        null = torch.full_like(cond, null_label) if cond is not None and cfg_scale > 0 else None
        eps_fn = make_eps_fn(nnet, schedule, cond=cond, null_cond=null, cfg_scale=cfg_scale)
        x0 = sample(eps_fn, x_T, schedule, sampler, steps, clip_x0=clip_x0, generator=gen)
        if decode is not None:
            x0 = decode(x0)
        out.append(quantize(x0).cpu().numpy())
    return np.concatenate(out)


def image_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """uint8 (N, 3, H, W) -> one uint8 (rows·H, columns·W, 3) image, row-major, 2 px white gutters."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    g = 2
    grid = np.full((rows * (h + g) + g, columns * (w + g) + g, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        top, left = g + r * (h + g), g + col * (w + g)
        grid[top : top + h, left : left + w] = img.transpose(1, 2, 0)
    return grid


# --- chunked generation (in-process or under accelerate) ------------------------------------------


def chunk_labels(spec: dict, k: int, size: int) -> torch.Tensor | None:
    """Labels of chunk k, seeded by (seed, k); None for unconditional models. y ~ Uniform{0..K-1}
    (ImageNet 256/512), or ~ `label_probs` (ImageNet 64 draws from the training set's class frequencies, §3.3)."""
    if not spec.get("num_real_classes"):
        return None
    if spec.get("labels") is not None:  # explicit labels, e.g. one row per class for a grid
        lo = k * int(spec["batch_size"])
        return torch.tensor(spec["labels"][lo : lo + size], dtype=torch.long)
    gen = torch.Generator().manual_seed(spec["seed"] * 1_000_003 + 2 * k + 1)
    if spec.get("label_probs") is not None:
        probs = torch.tensor(spec["label_probs"], dtype=torch.float64)
        return torch.multinomial(probs, size, replacement=True, generator=gen)
    return torch.randint(0, spec["num_real_classes"], (size,), generator=gen)


def generate_to_dir(spec: dict, rank: int = 0, world_size: int = 1, progress: bool = True) -> Path:
    """Write this rank's missing chunks of ``spec["n_samples"]`` samples into ``spec["out_dir"]``.

    ``spec``: checkpoint, which ("ema"|"raw"), n_samples, batch_size, sampler, steps, cfg_scale, clip_x0,
    seed, num_real_classes, null_label, autoencoder (or None), scale_factor, decode_batch_size, device.
    """
    from uvit_pipeline.training.checkpoint import load_checkpoint_dir, load_uvit_from_checkpoint

    out = Path(spec["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    n, bs = int(spec["n_samples"]), int(spec["batch_size"])
    todo = [
        k for k in range(rank, -(-n // bs), world_size) if not (out / f"chunk-{k:06d}.npz").exists()
    ]
    if not todo:
        return out
    device = torch.device(spec.get("device", "cpu"))
    config, _, _ = load_checkpoint_dir(spec["checkpoint"])
    nnet = load_uvit_from_checkpoint(spec["checkpoint"], which=spec.get("which", "ema")).to(device)
    mk = config["model_kwargs"]
    decode = None
    if spec.get("autoencoder"):
        from uvit_pipeline.encoders.autoencoder import decode_latents, load_autoencoder_spec

        vae = load_autoencoder_spec(spec["autoencoder"], device)
        autocast = (
            torch.float16 if device.type == "cuda" else None
        )  # §4.4: decode under fp16 autocast

        def decode(z):
            return decode_latents(
                vae,
                z,
                float(spec["scale_factor"]),
                chunk_size=int(spec["decode_batch_size"]),
                autocast_dtype=autocast,
            )

    schedule = get_schedule(config["schedule"])
    for k in tqdm(todo, desc=f"sampling (rank {rank})", unit="chunk", disable=not progress):
        size = min(bs, n - k * bs)
        labels = chunk_labels(spec, k, size)
        images = generate_samples(
            nnet,
            schedule,
            n=size,
            batch_size=size,
            sample_shape=(mk["in_chans"], mk["img_size"], mk["img_size"]),
            sampler=spec["sampler"],
            steps=int(spec["steps"]),
            labels=labels,
            null_label=spec.get("null_label"),
            cfg_scale=float(spec["cfg_scale"]),
            clip_x0=bool(spec["clip_x0"]),
            decode=decode,
            seed=spec["seed"] * 1_000_003 + 2 * k,
            device=device,
            progress=False,
        )
        lab = labels.numpy() if labels is not None else np.zeros(0, np.int64)
        atomic_write(
            out / f"chunk-{k:06d}.npz", lambda f, a=images, b=lab: np.savez(f, images=a, labels=b)
        )
    return out


def collect(
    out_dir: str | os.PathLike, n: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """All chunks in order -> (images uint8 (n, 3, H, W), labels (n,) or None)."""
    images, labels = [], []
    for k in range(-(-n // batch_size)):
        path = Path(out_dir) / f"chunk-{k:06d}.npz"
        if not path.is_file():
            raise FileNotFoundError(
                f"sample chunk {path} is missing: the sampling run did not finish"
            )
        with np.load(path, allow_pickle=False) as f:
            images.append(f["images"])
            labels.append(f["labels"])
    lab = np.concatenate(labels)
    return np.concatenate(images), (lab if lab.size else None)
