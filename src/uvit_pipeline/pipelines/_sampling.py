"""What the sampling pipelines share (evaluation, generate, guidance_sweep): a `SamplingSpec` from a
parameter section, a sampling run over every process of the launch (`launch.run_parallel`), and the
scoring of a folder of samples."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from uvit_pipeline._io import read_json
from uvit_pipeline.data.text_features import TextFeatures
from uvit_pipeline.launch import LaunchSpec, run_parallel
from uvit_pipeline.metrics import blocks
from uvit_pipeline.metrics.demo_classifier import accuracy_of
from uvit_pipeline.metrics.fid import frechet_distance, statistics
from uvit_pipeline.metrics.network import METRIC_NAMES
from uvit_pipeline.pipelines._staging import staging_dir
from uvit_pipeline.sampling import SamplingSpec, collect_caption_rows
from uvit_pipeline.sampling.generate import collect_labels

log = logging.getLogger(__name__)


def sampling_spec(
    uvit_checkpoint: str,
    autoencoder: str | None,
    decoder: str | None,
    section: dict,
    *,
    text_features: str | None = None,
    n_samples: int,
    batch_size: int,
    seed: int,
    labels: list[int] | None = None,
    label_probs: list[float] | None = None,
    cfg_param: str = "evaluation.cfg_scale",
) -> SamplingSpec:
    """The spec of a sampling job with the settings of a parameter section (`evaluation` or
    `generate`: use_ema, sampler, steps, cfg_scale, clip_x0, device, decode_batch_size,
    mixed_precision, cfg_batched); latents
    decode through `decoder`, else `autoencoder`."""
    return SamplingSpec.for_checkpoint(
        uvit_checkpoint,
        autoencoder=decoder or autoencoder,
        text_features=text_features,
        cfg_param=cfg_param,
        which="ema" if section["use_ema"] else "raw",
        n_samples=n_samples,
        batch_size=batch_size,
        sampler=section["sampler"],
        steps=section["steps"],
        cfg_scale=section["cfg_scale"],
        clip_x0=section["clip_x0"],
        seed=seed,
        labels=labels,
        label_probs=label_probs,
        device=section["device"],
        decode_batch_size=section["decode_batch_size"],
        mixed_precision=section["mixed_precision"],
        cfg_batched=section["cfg_batched"],
    )


def launch_dir(folder: Path) -> Path:
    """Where a data-parallel launch that builds `folder` keeps its payload, config and log: a
    sibling of the folder (`<folder>.launch`), so the folder holds only its own files."""
    return folder.parent / f"{folder.name}.launch"


def run_sampling(
    spec: SamplingSpec, folder: Path, launcher: dict, contexts: Path | None = None
) -> None:
    """The chunks of `spec` into `folder`, over every process of the `launcher` launch
    (`spec.device`: CPU processes, or one GPU each); in this process when it is one process.
    `contexts`: a text model's own contexts (`generate_to_dir`), instead of drawn captions."""
    spec.to_json(folder / "spec.json")  # what the chunks are (read by the scoring)
    run_parallel(
        LaunchSpec.from_params(launcher),
        "uvit_pipeline.sampling.generate:sample_part",
        {"spec": spec.to_dict(), "out": str(folder), "contexts": contexts and str(contexts)},
        work_dir=launch_dir(folder),
        device=spec.device,
        what="sampling",
    )


def metric_name(base: str, spec: SamplingSpec) -> str:
    """`fid` only under the paper's protocol (§3.3: 50,000 samples, 30,000 for MS-COCO; guided when
    the model can be): `fid10k` for fewer samples, `..._noguidance` for an unguided CFG model."""
    if base != "fid":
        return base  # the demo's distance is demo_fd whatever its settings
    n, full = spec.n_samples, 30_000 if spec.text_features else 50_000
    name = base if n >= full else f"fid{n // 1000}k" if n >= 1000 else f"fid{n}"
    guidable = spec.null_label is not None or bool(spec.text_features)
    return f"{name}_noguidance" if guidable and spec.cfg_scale == 0 else name


def _text_pairs(generated_samples: str, spec: SamplingSpec, text_features: str):
    """(caption of each sample, class of the image it came from) for text-to-image samples."""
    caption_rows, _ = collect_caption_rows(generated_samples, spec.n_samples, spec.batch_size)
    manifest = TextFeatures(text_features).split("val").store.manifest
    rows = manifest.iloc[caption_rows]
    return rows["caption"].tolist(), rows["image_label"].to_numpy()


# Images per feature-network batch while scoring (within one sample chunk).
SCORE_BATCH = 200


def _chunk_fingerprint(folder: Path) -> list:
    """(name, size, mtime) of every chunk file: new samples under the same spec get new blocks."""
    return [
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.glob("chunk-*.npz"))
    ]


def score_sample_dir(
    generated_samples: str,
    reference_stats: dict,
    feature_network: str,
    clip_model: str | None,
    text_features: str | None,
    *,
    device: str,
    launcher: dict,
    staging: str,
) -> dict:
    """Fréchet distance to the reference statistics, named after the feature network (`fid`, or
    `demo_fd` for the demo's classifier: never called FID); the demo's class accuracy (for text
    models: the class of the image whose caption conditioned the sample); the CLIP score of
    text-to-image samples and their captions where a CLIP model is configured.

    The networks run over every process of the `launcher` launch on `device`, one block per sample
    chunk (`metrics.blocks.score_part`, resumable block by block); the metrics are computed here
    from the merged blocks, so they do not depend on the number of processes."""
    samples = Path(generated_samples)
    info = read_json(Path(feature_network) / "network.json", "Re-run fid_reference")
    if info["network"] != reference_stats["network"]:
        raise ValueError(
            f"reference_stats were computed with {reference_stats['network']}, the feature network "
            f"is {info['network']}: re-run the fid_reference pipeline"
        )
    spec = SamplingSpec.from_json(samples / "spec.json")
    n, size = spec.n_samples, spec.batch_size
    labels = collect_labels(samples, n, size)
    captions = None
    if spec.text_features:
        if text_features is None:
            raise ValueError("text-to-image samples are scored with their captions: text_features")
        captions, labels = _text_pairs(generated_samples, spec, text_features)
    clip = clip_model if captions is not None else None
    payload = {
        "samples": str(samples),
        "n": n,
        "chunk_size": size,
        "network": str(feature_network),
        "batch_size": SCORE_BATCH,
        "clip_model": None if clip is None else str(clip),
        "captions": captions if clip is not None else None,
    }
    identity = {
        **{k: v for k, v in payload.items() if k != "captions"},
        "spec": spec.to_dict(),
        "chunks": _chunk_fingerprint(samples),
        "network_info": info,
    }
    folder = staging_dir(staging, "score-blocks", identity)
    n_blocks = blocks.num_blocks(n, size)
    launch = LaunchSpec.from_params(launcher)
    merged = blocks.compute_blocks(launch, "score_part", payload, folder, n_blocks, device=device)
    mu, sigma = statistics(merged["acts"])
    name = metric_name(METRIC_NAMES[info["network"]], spec)
    metrics = {name: frechet_distance(mu, sigma, reference_stats["mu"], reference_stats["sigma"])}
    if "pred" in merged and labels is not None:
        metrics["demo_class_accuracy"] = accuracy_of(
            merged["pred"], labels, info.get("num_classes")
        )
    if "clip" in merged:
        # transformers takes seconds to import; only text models scored with CLIP need it
        from uvit_pipeline.metrics.clip_score import clip_score_of

        scored = clip_score_of(merged["clip"], str(merged["meta_clip_metric"]), str(clip))
        metrics.update({k: v for k, v in scored.items() if isinstance(v, float)})
    shutil.rmtree(folder)  # merged: its blocks served the resume; only machine 0 merges
    log.info("Evaluation on %d samples: %s", n, json.dumps(metrics))
    return metrics
