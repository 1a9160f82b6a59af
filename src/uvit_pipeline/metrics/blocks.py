"""The metrics' network work cut into fixed blocks, for `launch.run_parallel`: the reference
statistics of real images (`reference_part`) and the scoring of sample chunks (`score_part`).

A block is a fixed slice of the images (`block_size` manifest rows, or one sample chunk) that does not
depend on the number of processes. Rank r computes blocks r, r + W, ... on its own device, writes
each as `<what>-<k>.npz` atomically and skips those that exist, so after any rank is killed a rerun
computes only the missing blocks. The caller merges the blocks in order (`merge_blocks`) and computes
μ, Σ and the metrics in its own process; one process goes through the same blocks, so the numbers
do not depend on how many processes made them.

Feature networks output float32: a block keeps the activations as float32 (exact), the merge
returns them as float64, as `fid.inception_activations` gives them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from uvit_pipeline._io import atomic_write

from . import demo_classifier
from .network import load_feature_network

log = logging.getLogger(__name__)

REFERENCE = "reference"  # blocks of real images (reference statistics)
SCORE = "score"  # blocks of samples (one sample chunk each)


def block_path(folder: str | os.PathLike, what: str, k: int) -> Path:
    return Path(folder) / f"{what}-{k:06d}.npz"


def num_blocks(n: int, block_size: int) -> int:
    if n < 1 or block_size < 1:
        raise ValueError(f"need n >= 1 items in blocks of >= 1, got n={n}, block_size={block_size}")
    return -(-n // block_size)


def _float32_exact(acts: np.ndarray, what: str) -> np.ndarray:
    out = np.asarray(acts).astype(np.float32)
    if not np.array_equal(out, acts):
        raise ValueError(f"{what}: features are not float32 values; a block would round them")
    return out


def _write_block(folder: Path, what: str, k: int, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(block_path(folder, what, k), lambda f: np.savez(f, **arrays))


def _todo(folder: Path, what: str, part, n_blocks: int) -> list[int]:
    folder.mkdir(parents=True, exist_ok=True)
    return [k for k in part.blocks(n_blocks) if not block_path(folder, what, k).exists()]


def merge_blocks(folder: str | os.PathLike, what: str, n_blocks: int) -> dict[str, np.ndarray]:
    """Every block's arrays concatenated in block order (activations as float64); a missing
    block raises `FileNotFoundError` naming it."""
    parts: dict[str, list[np.ndarray]] = {}
    for k in range(n_blocks):
        path = block_path(folder, what, k)
        if not path.is_file():
            raise FileNotFoundError(f"block {path} is missing: its computation did not finish")
        with np.load(path, allow_pickle=False) as f:
            for key in f.files:
                parts.setdefault(key, []).append(f[key])
    out = {}
    for key, arrays in parts.items():
        if key.startswith("meta_"):
            out[key] = arrays[0]
            continue
        arrays = [a for a in arrays if a.size] or arrays[:1]  # a block of only skipped images
        merged = np.concatenate(arrays)
        out[key] = merged.astype(np.float64) if key == "acts" else merged
    return out


def compute_blocks(
    launch, entry: str, payload: dict, folder: Path, n_blocks: int, *, device: str
) -> dict[str, np.ndarray]:
    """`entry` (`reference_part` or `score_part`) over every process of `launch` (a `LaunchSpec`)
    on `device`, its blocks in `folder`/blocks, then merged (`merge_blocks`) in this process."""
    from uvit_pipeline.launch import run_parallel

    what = {"reference_part": REFERENCE, "score_part": SCORE}[entry]
    run_parallel(
        launch,
        f"{__name__}:{entry}",
        {**payload, "out": str(folder / "blocks")},
        work_dir=folder / "launch",
        device=device,
        what="reference statistics" if what == REFERENCE else "scoring",
    )
    return merge_blocks(folder / "blocks", what, n_blocks)


# --- reference statistics: real images, `block_size` manifest rows per block ----------------------


def reference_part(payload: dict, part) -> None:
    """`run_parallel` entry: this rank's missing blocks of real-image activations.

    payload: out (block folder), network (feature network folder), batch_size, manifest (parquet
    of the rows to use, in order), checksum_algorithm, n, block_size, raw_images, crop,
    resolution, workers, source, split (`data.sources` array sources)."""
    from uvit_pipeline.data.extract import load_images
    from uvit_pipeline.data.sources import array_source

    out = Path(payload["out"])
    n_blocks = num_blocks(payload["n"], payload["block_size"])
    todo = _todo(out, REFERENCE, part, n_blocks)
    if not todo:
        return
    _, features, _ = load_feature_network(
        payload["network"], device=part.device, batch_size=payload["batch_size"]
    )
    manifest = pd.read_parquet(payload["manifest"])
    if payload.get("checksum_algorithm"):
        manifest.attrs["checksum_algorithm"] = payload["checksum_algorithm"]
    arrays = array_source(payload["source"], payload["raw_images"], payload["split"])
    bs = payload["block_size"]
    for k in tqdm(todo, desc="reference images", unit="block", disable=not part.is_main):
        rows = manifest.iloc[k * bs : min((k + 1) * bs, payload["n"])]
        images, kept, report = load_images(
            payload["raw_images"],
            rows,
            crop=payload["crop"],
            resolution=payload["resolution"],
            workers=payload["workers"],
            array_source=arrays,
            return_report=True,
        )
        if len(report):
            log.warning("block %d: %d reference images skipped", k, len(report))
        acts = features(images) if len(images) else np.zeros((0, 0))
        _write_block(
            out,
            REFERENCE,
            k,
            {
                "acts": _float32_exact(acts, f"reference block {k}"),
                "skipped": (report["manifest_row"].to_numpy(np.int64) + k * bs)
                if len(report)
                else np.zeros(0, np.int64),
            },
        )


# --- scoring: one block per sample chunk ----------------------------------------------------------


def score_part(payload: dict, part) -> None:
    """`run_parallel` entry: this rank's missing blocks of sample scores, one per sample chunk.

    A block holds the feature network's activations of the chunk (`acts`), the demo classifier's
    predictions (`pred`, when the network is the classifier) and, with a CLIP model and the
    captions, the cosine similarity of each image with its caption (`clip`).

    payload: samples (folder of `chunk-<k>.npz`), n, chunk_size, out, network, batch_size,
    clip_model (or None), captions (one per sample, or None)."""
    out = Path(payload["out"])
    n, size = payload["n"], payload["chunk_size"]
    todo = _todo(out, SCORE, part, num_blocks(n, size))
    if not todo:
        return
    _, features, classifier = load_feature_network(
        payload["network"], device=part.device, batch_size=payload["batch_size"]
    )
    scorer, captions = None, payload.get("captions")
    if payload.get("clip_model") and captions is not None:
        # transformers takes seconds to import; only text models scored with CLIP need it
        from .clip_score import load_clip_scorer

        scorer = load_clip_scorer(payload["clip_model"], device=part.device)
    for k in tqdm(todo, desc="scoring", unit="chunk", disable=not part.is_main):
        chunk = Path(payload["samples"]) / f"chunk-{k:06d}.npz"
        if not chunk.is_file():
            raise FileNotFoundError(f"sample chunk {chunk} is missing: the sampling did not finish")
        with np.load(chunk, allow_pickle=False) as f:
            images = f["images"]
        arrays = {"acts": _float32_exact(features(images), f"sample chunk {k}")}
        if classifier is not None:
            arrays["pred"] = demo_classifier.classifier_predictions(classifier, images)
        if scorer is not None:
            from .clip_score import clip_similarities

            texts = list(captions[k * size : k * size + len(images)])
            arrays["clip"] = clip_similarities(scorer, images, texts, progress=False)
            arrays["meta_clip_metric"] = np.array(scorer.metric_name)
        _write_block(out, SCORE, k, arrays)
