"""Sample generation (§5.3): noise -> sampler -> (VAE decode) -> uint8 images.

`build_sampler` turns a checkpoint into (network, schedule, decoder, sample shape) once, for every
caller. Evaluation samples are produced in fixed chunks; chunk k has its own seed (seed, k) for its
noise and class labels, and text contexts drawn from a text store depend only on (seed, sample index), so
the images do not depend on how many processes share the work. Each chunk is written
atomically to `chunk-<k>.npz` so an interrupted 50K-sample run resumes with the chunks that are missing.
`sample_part` is the entry point of `launch.run_parallel`: rank r makes chunks k ≡ r (mod world size),
on its own device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from uvit_pipeline._io import atomic_write
from uvit_pipeline.data.text_features import TextFeatures
from uvit_pipeline.diffusion import get_schedule, make_eps_fn, sample
from uvit_pipeline.diffusion.schedules import NoiseSchedule
from uvit_pipeline.encoders.autoencoder import decode_latents, load_autoencoder_spec
from uvit_pipeline.models.checkpoint import (
    CheckpointInfo,
    load_uvit_from_checkpoint,
    read_checkpoint_info,
)

from .conditions import (
    TextConditions,
    check_text_identity,
    chunk_labels,
    conditions_from_text_store,
)
from .spec import SamplingSpec

__all__ = [
    "SamplerSetup",
    "build_sampler",
    "chunk_labels",
    "collect",
    "collect_caption_rows",
    "collect_labels",
    "generate_samples",
    "generate_to_dir",
    "quantize",
    "sample_part",
]


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
    contexts: np.ndarray | torch.Tensor | None = None,
    null_context: np.ndarray | torch.Tensor | None = None,
    cfg_scale: float = 0.0,
    clip_x0: bool = False,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    mixed_precision: str = "no",
    cfg_batched: bool = False,
) -> np.ndarray:
    """Generate ``n`` images as uint8 (n, 3, H, W).

    Class models take ``labels`` (n,) and, for CFG, ``null_label``; text models take ``contexts``
    (n, L, D) and, for CFG, ``null_context`` (L, D), the encoded empty prompt (§4.3). Guidance is
    (1+s)·ε_c − s·ε_u with s = ``cfg_scale``, its two passes as one forward of 2B with
    ``cfg_batched``. ``decode`` maps latents to [-1, 1] images. ``mixed_precision`` (no / fp16 / bf16
    / auto, `autocast_dtype`) runs the network forward under autocast; the solver stays in fp32.
    """
    if labels is not None and contexts is not None:
        raise ValueError("give labels (class model) or contexts (text model), not both")
    if contexts is not None and len(contexts) != n:
        raise ValueError(f"contexts holds {len(contexts)} entries for n={n} samples")
    if contexts is not None and cfg_scale > 0 and null_context is None:
        raise ValueError(
            "cfg_scale > 0 with contexts needs null_context (the encoded empty prompt)"
        )
    device = torch.device(device)
    net = _autocast_net(nnet, device, autocast_dtype(mixed_precision, device))
    null_ctx = None
    if contexts is not None and cfg_scale > 0:
        null_ctx = torch.as_tensor(null_context, dtype=torch.float32, device=device)
        null_ctx = null_ctx.reshape(1, *null_ctx.shape[-2:])  # broadcast to the batch by eps_fn
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for lo in tqdm(range(0, n, batch_size), desc="sampling", unit="batch", disable=not progress):
        b = min(batch_size, n - lo)
        x_T = torch.randn((b, *sample_shape), generator=gen).to(device)
        if contexts is not None:
            cond = torch.as_tensor(contexts[lo : lo + b], dtype=torch.float32).to(device)
            null = null_ctx
        else:
            cond = labels[lo : lo + b].to(device) if labels is not None else None
            null = torch.full_like(cond, null_label) if cond is not None and cfg_scale > 0 else None
        eps_fn = make_eps_fn(
            net, schedule, cond=cond, null_cond=null, cfg_scale=cfg_scale, batched=cfg_batched
        )
        x0 = sample(eps_fn, x_T, schedule, sampler, steps, clip_x0=clip_x0, generator=gen)
        if decode is not None:
            x0 = decode(x0)
        out.append(quantize(x0).cpu().numpy())
    return np.concatenate(out)


def autocast_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of sampling: auto = fp16 on a GPU (as the original) and none on the CPU."""
    if mixed_precision in ("no", False):
        return None
    if mixed_precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
    if mixed_precision not in dtypes:
        raise ValueError(
            f"mixed_precision must be one of auto, no, fp16, bf16, got {mixed_precision!r}"
        )
    return dtypes[mixed_precision]


def _autocast_net(nnet, device: torch.device, dtype: torch.dtype | None):
    """nnet with its forward under autocast(dtype) and its output back in fp32 (as accelerate's
    mixed precision wraps a prepared model); nnet itself when dtype is None."""
    if dtype is None:
        return nnet

    def forward(*args, **kwargs) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype):
            out = nnet(*args, **kwargs)
        return out.float()

    return forward


# --- one setup for every caller: checkpoint -> network, schedule, decoder, shape -------------------


@dataclass
class SamplerSetup:
    """A loaded checkpoint ready to sample: network, schedule, latent decoder (or None), x_T shape."""

    nnet: torch.nn.Module
    schedule: NoiseSchedule
    decode: Callable[[torch.Tensor], torch.Tensor] | None
    sample_shape: tuple[int, int, int]
    info: CheckpointInfo  # the checkpoint's typed config
    device: torch.device

    @property
    def is_text(self) -> bool:
        return self.info.is_text

    @property
    def text_encoder(self) -> dict | None:
        """Identity of the text encoder the model was trained with (None if not recorded)."""
        return self.info.text_encoder

    def generate(self, **kwargs) -> np.ndarray:
        """`generate_samples` with this setup's network, schedule, shape, decoder and device."""
        kwargs.setdefault("batch_size", kwargs["n"])
        return generate_samples(
            self.nnet,
            self.schedule,
            sample_shape=self.sample_shape,
            decode=self.decode,
            device=self.device,
            **kwargs,
        )


def build_sampler(spec: SamplingSpec) -> SamplerSetup:
    """Load ``spec.checkpoint`` (``spec.which`` weights) on ``spec.device`` for sampling, with the
    decoder of a latent model (``spec.autoencoder``; ``spec.decode_latents=False`` returns latents
    undecoded, for throughput checks on machines without diffusers).

    The latent scale factor is the checkpoint's (`data.scale_factor`, 0.23010 for COCO); a different
    explicit ``spec.scale_factor`` is refused (the original t2i sampling script's 0.18215 bug, §7.3).
    """
    checkpoint, autoencoder, scale_factor = spec.checkpoint, spec.autoencoder, spec.scale_factor
    device = torch.device(spec.device)
    info = read_checkpoint_info(checkpoint)
    nnet = load_uvit_from_checkpoint(checkpoint, which=spec.which).to(device)
    decode = None
    if info.is_latent and spec.decode_latents:
        if not autoencoder:
            raise ValueError(
                f"checkpoint {checkpoint} samples latents: name the autoencoder that decodes "
                "them (the catalog entry `decoder`, or `autoencoder` when no separate decoder "
                "is set)"
            )
        trained = info.scale_factor
        if scale_factor is None:
            scale_factor = trained
        elif trained is not None and not math.isclose(scale_factor, trained, rel_tol=1e-6):
            raise ValueError(
                f"scale_factor {scale_factor} differs from the checkpoint's data.scale_factor "
                f"{trained}: decoding would use another latent scale (§4.5)"
            )
        if scale_factor is None:
            raise ValueError(f"checkpoint {checkpoint} records no data.scale_factor; pass one")
        decode = _latent_decoder(autoencoder, float(scale_factor), spec.decode_batch_size, device)
    return SamplerSetup(
        nnet=nnet,
        schedule=get_schedule(info.schedule),
        decode=decode,
        sample_shape=info.sample_shape,
        info=info,
        device=device,
    )


def _latent_decoder(autoencoder: str, scale_factor: float, chunk: int, device: torch.device):
    vae = load_autoencoder_spec(autoencoder, device)
    autocast = torch.float16 if device.type == "cuda" else None  # §4.4: decode under fp16 autocast

    def decode(z: torch.Tensor) -> torch.Tensor:
        return decode_latents(vae, z, scale_factor, chunk_size=chunk, autocast_dtype=autocast)

    return decode


# --- chunked generation (in-process or under accelerate) ------------------------------------------


def _text_source(spec: SamplingSpec, setup: SamplerSetup) -> TextFeatures:
    """The text store evaluation contexts are drawn from, checked against the checkpoint."""
    if not spec.text_features:
        raise ValueError(
            f"checkpoint {spec.checkpoint} is a text-to-image model: the sampling spec needs "
            "'text_features' (the text-context store whose val captions condition the samples)"
        )
    text = TextFeatures(spec.text_features)
    if text.context_shape != setup.info.context_shape:
        raise ValueError(
            f"text store {text.root} gives contexts {text.context_shape}, the model takes "
            f"(num_clip_token, clip_dim) = {setup.info.context_shape}"
        )
    check_text_identity(setup.text_encoder, text.identity, f"text store {text.root} contexts")
    return text


def _explicit_contexts(path: str | os.PathLike, n: int, setup: SamplerSetup) -> dict:
    """Text contexts given as a file (`contexts` (n, L, D), `null_context` (L, D)), checked."""
    with np.load(path, allow_pickle=False) as f:
        out = {"contexts": f["contexts"], "null_context": f["null_context"]}
    want = setup.info.context_shape
    if out["contexts"].shape != (n, *want) or out["null_context"].shape != want:
        raise ValueError(
            f"text contexts {path}: {out['contexts'].shape} and null {out['null_context'].shape}, "
            f"the job needs ({n}, {want[0]}, {want[1]}) and {want}"
        )
    return out


def generate_to_dir(
    spec: SamplingSpec,
    out_dir: str | os.PathLike,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    contexts: str | os.PathLike | None = None,
) -> Path:
    """Write this rank's missing chunks of ``spec.n_samples`` samples into ``out_dir``.

    A chunk holds images, labels and, for text models, the caption_rows / image_rows that
    conditioned them. A text model's contexts are captions drawn from ``spec.text_features``, or
    with ``contexts`` an .npz of the samples' own (`contexts` (n, L, D) and `null_context`
    (L, D), e.g. encoded prompts).
    """
    if spec.sampler is None or spec.steps is None:
        raise ValueError("the sampling spec names no sampler or no number of steps")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, bs = int(spec.n_samples), int(spec.batch_size)
    todo = [
        k for k in range(rank, -(-n // bs), world_size) if not (out / f"chunk-{k:06d}.npz").exists()
    ]
    if not todo:
        return out
    setup = build_sampler(spec)
    text = explicit = None
    if setup.is_text and contexts is not None:
        explicit = _explicit_contexts(contexts, n, setup)
    elif setup.is_text:
        text = _text_source(spec, setup)
    for k in tqdm(todo, desc=f"sampling (rank {rank})", unit="chunk", disable=not progress):
        size = min(bs, n - k * bs)
        extra: dict[str, np.ndarray] = {}
        cond: dict = {"labels": chunk_labels(spec, k, size), "null_label": spec.null_label}
        if explicit is not None:
            lo = k * bs
            cond = {
                "contexts": explicit["contexts"][lo : lo + size],
                "null_context": explicit["null_context"],
            }
        elif text is not None:  # a random val image's random caption per sample (§3.3, §7.3)
            tc: TextConditions = conditions_from_text_store(
                text, size, spec.seed, start=k * bs, split=spec.text_split
            )
            cond = {"contexts": tc.contexts, "null_context": tc.null_context}
            extra = {"caption_rows": tc.caption_rows, "image_rows": tc.image_rows}
        images = setup.generate(
            n=size,
            batch_size=size,
            sampler=spec.sampler,
            steps=int(spec.steps),
            cfg_scale=float(spec.cfg_scale),
            clip_x0=bool(spec.clip_x0),
            seed=spec.seed * 1_000_003 + 2 * k,
            progress=False,
            mixed_precision=spec.mixed_precision,
            cfg_batched=bool(spec.cfg_batched),
            **cond,
        )
        lab = cond.get("labels")
        arrays = {
            "images": images,
            "labels": lab.numpy() if lab is not None else np.zeros(0, np.int64),
            **extra,
        }
        atomic_write(out / f"chunk-{k:06d}.npz", lambda f, a=arrays: np.savez(f, **a))
    return out


def sample_part(payload: dict, part) -> None:
    """`launch.run_parallel` entry: this rank's missing chunks of the sampling job
    `payload["spec"]` (`SamplingSpec.to_dict()`) into `payload["out"]`, on `part.device`, with
    the text contexts of `payload["contexts"]` when given; only the main rank shows progress."""
    spec = SamplingSpec.from_dict(payload["spec"]).replace(device=part.device)
    generate_to_dir(
        spec,
        payload["out"],
        part.rank,
        part.world,
        progress=part.is_main,
        contexts=payload.get("contexts"),
    )


def _chunks(
    out_dir: str | os.PathLike, n: int, batch_size: int, keys: tuple[str, ...] | None = None
) -> Iterator[dict]:
    for k in range(-(-n // batch_size)):
        path = Path(out_dir) / f"chunk-{k:06d}.npz"
        if not path.is_file():
            raise FileNotFoundError(
                f"sample chunk {path} is missing: the sampling run did not finish"
            )
        with np.load(path, allow_pickle=False) as f:
            yield {key: f[key] for key in f.files if keys is None or key in keys}


def collect(
    out_dir: str | os.PathLike, n: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """All chunks in order -> (images uint8 (n, 3, H, W), labels (n,) or None)."""
    images, labels = [], []
    for chunk in _chunks(out_dir, n, batch_size):
        images.append(chunk["images"])
        labels.append(chunk["labels"])
    lab = np.concatenate(labels)
    return np.concatenate(images), (lab if lab.size else None)


def collect_labels(out_dir: str | os.PathLike, n: int, batch_size: int) -> np.ndarray | None:
    """The labels (n,) of the chunks in order (None for an unconditional model), without reading
    the images."""
    lab = np.concatenate([c["labels"] for c in _chunks(out_dir, n, batch_size, ("labels",))])
    return lab if lab.size else None


def collect_caption_rows(
    out_dir: str | os.PathLike, n: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(caption rows, image rows) (n,) of a text model's chunks, in sample order (pairs for CLIP score)."""
    captions, images = [], []
    for chunk in _chunks(out_dir, n, batch_size, ("caption_rows", "image_rows")):
        if "caption_rows" not in chunk:
            raise ValueError(f"sample chunks in {out_dir} hold no caption rows (not a text model)")
        captions.append(chunk["caption_rows"])
        images.append(chunk["image_rows"])
    return np.concatenate(captions), np.concatenate(images)
