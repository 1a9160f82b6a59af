"""Nodes of the `text_features` pipeline (text-to-image experiments)."""

from __future__ import annotations

import logging

import pandas as pd
import torch

from uvit_pipeline.data.feature_store import FeatureStore
from uvit_pipeline.data.text_features import extract_text_features
from uvit_pipeline.launch import LaunchSpec
from uvit_pipeline.models import resolve_kwargs
from uvit_pipeline.pipelines._staging import manifest_id, staging_dir

log = logging.getLogger(__name__)


def build_text_features(
    image_manifest: pd.DataFrame,
    image_features: str | None,
    text_encoder: str,
    text: dict,
    model: dict,
    launcher: dict,
    paths: dict,
) -> str:
    """Every caption of every image -> the text encoder's last hidden state (fp16, §7.3), in the
    image store's row order for train2014 and the manifest's for val2014; plus the encoded empty
    prompt (the null context of guidance) and the visualisation prompts. Without an image feature
    store (evaluating an imported checkpoint) only the val2014 captions are encoded: they are what
    evaluation samples are conditioned on. The captions are spread over every process of the
    `launcher` section's launch, each with its own text encoder on `text.device` (CPU processes, or
    one GPU each); the store is the same for any number."""
    # encoders.text imports transformers (seconds): only the text-to-image environments run this
    from uvit_pipeline.encoders.text import check_clip_dim, load_text_encoder, text_encoder_identity

    spec = LaunchSpec.from_params(launcher)  # bad launcher settings fail before any work
    # Here for its identity and hidden size only, on the CPU: every process of the launch loads its
    # own copy on its device, in fp32 as the original (§7.3); the features are stored in fp16.
    encoder = load_text_encoder(text_encoder, device="cpu", dtype=torch.float32)
    kwargs = resolve_kwargs(
        model.get("preset"), **{k: v for k, v in model.items() if k != "preset"}
    )
    check_clip_dim(kwargs.get("clip_dim"), encoder)  # before any compute
    val = image_manifest[image_manifest["split"] == "val2014"]
    image_rows = {"val2014": val["image_id"].tolist()}
    if image_features is not None:
        image_rows["train2014"] = FeatureStore(image_features).manifest["image_id"].tolist()
    else:
        log.info("No image feature store yet: encoding the val2014 captions only (for evaluation)")
        image_manifest = val
    identity = {
        "encoder": text_encoder_identity(encoder, text["max_length"]),
        "manifest": manifest_id(image_manifest),
        "rows": {k: [len(v), *v[:8]] for k, v in image_rows.items()},
        "prompts": text["prompts"],
        "shard_size": text["shard_size"],
    }
    out = staging_dir(paths["staging"], "text-features", identity)
    extract_text_features(
        image_manifest,
        out,
        encoder,
        batch_size=text["batch_size"],
        shard_size=text["shard_size"],
        prompts=text["prompts"],
        image_rows=image_rows,
        max_length=text["max_length"],
        encoder_spec=text_encoder,
        launch=spec,
        device=text["device"],
    )
    return str(out)
