"""What training reads: the feature store (opened and verified before the first step), the caption
store of text-to-image models, the DataLoader in resumable order, and the per-step batch (§4.5, §7.3)."""

from __future__ import annotations

import logging
import math

import torch
from accelerate import Accelerator
from torch.utils.data import BatchSampler, DataLoader

from ..data import BatchReads, CaptionedFeatureDataset, FeatureDataset, FeatureStore, TextFeatures
from ..models.checkpoint import label_roles
from .config import TrainConfig
from .data_order import ResumableDataOrder

logger = logging.getLogger(__name__)

TRAIN_SPLIT = "train"


def verify_text_store(config: TrainConfig) -> TextFeatures:
    """Open `training.data.text_path` and check it fits the model; raises ValueError naming both sides.

    Checks: the encoder hidden size equals `model.clip_dim`, the store's max_length equals
    `model.num_clip_token` (all 77 tokens are network tokens, §1.1-1.2), and every key of
    `training.data.expected_text_encoder` equals the store's encoder identity. Cheap: reads meta only.
    """
    text = TextFeatures(config.data.text_path)
    kw = config.model_kwargs()
    if text.hidden_size != kw["clip_dim"]:
        raise ValueError(
            f"text store {text.root}: encoder hidden size {text.hidden_size} "
            f"({text.encoder.get('name')!r}) != model.clip_dim {kw['clip_dim']}"
        )
    if text.max_length != kw["num_clip_token"]:
        raise ValueError(
            f"text store {text.root}: max_length {text.max_length} != model.num_clip_token "
            f"{kw['num_clip_token']}"
        )
    mismatch = {
        k: (text.encoder.get(k, "<missing>"), v)
        for k, v in config.data.expected_text_encoder.items()
        if text.encoder.get(k) != v
    }
    if mismatch:
        lines = [f"  {k}: store={s!r} expected={e!r}" for k, (s, e) in mismatch.items()]
        raise ValueError(
            f"text store {text.root} was made with another text encoder than "
            "training.data.expected_text_encoder:\n" + "\n".join(lines)
        )
    return text


def text_dataset(config: TrainConfig, store: FeatureStore, seed: int) -> CaptionedFeatureDataset:
    """The (moments, caption context) dataset of the train split, after `verify_text_store`."""
    text = verify_text_store(config)
    return CaptionedFeatureDataset(
        store,
        text.split(TRAIN_SPLIT),
        text.empty_context,
        random_flip=config.data.random_flip,
        p_uncond=config.p_uncond,
        seed=seed,
    )


def prepare_batch(batch, config: TrainConfig, device: torch.device, conditional: bool):
    """Dataset batch (x, label | context) -> (x0 fp32 network input, labels / contexts or None), §4.5.

    Pixel items are already in [-1, 1]; latent items are moments (B, 8, h, w) from which a fresh
    posterior sample is drawn every step, in fp32 and outside autocast, then scaled.
    """
    x, c = batch
    x = x.to(device, non_blocking=True).float()
    if config.data.kind == "latent_moments":
        from ..encoders import sample_latents  # lazy: only latent runs need the encoders package

        x = sample_latents(x, config.data.scale_factor, None)
    if not conditional:
        return x, None
    c = c.to(device, non_blocking=True)
    return x, (c.float() if c.is_floating_point() else c.long())  # text contexts | class labels


def open_store(config: TrainConfig, accelerator: Accelerator):
    """Open and check the feature store before any training: layout, meta, shapes, identity,
    content (on the main process: `FeatureStore.check`, or `verify` with
    `training.data.verify: full`) and label range."""
    store = FeatureStore(config.data.path)
    if config.data.expected_meta:
        store.verify_meta(config.data.expected_meta)
    if store.meta.get("kind") != config.data.kind:
        raise ValueError(
            f"training.data.kind is {config.data.kind!r} but store {store.root} holds "
            f"{store.meta.get('kind')!r} features"
        )
    _check_store_shape(store, config)
    if config.data.content_id and store.content_id != config.data.content_id:
        raise ValueError(
            f"training.data.content_id is {config.data.content_id!r} but store {store.root} "
            f"holds content {store.content_id!r}"
        )
    if accelerator.is_main_process:  # the full sha256 ran when the store was written
        store.verify(progress=True) if config.data.verify == "full" else store.check(progress=True)
    accelerator.wait_for_everyone()
    kw = config.model_kwargs()
    # With label dropping the last class index is the null class (§4.3), never a data label.
    num_real, _ = label_roles(kw.get("num_classes"), kw.get("clip_dim"), config.p_uncond)
    if num_real is not None:
        store.check_labels(num_real)
    return store


def check_resume_identity(path, state: dict, store) -> None:
    """Refuse to continue a state trained on other data (its recorded store content_id)."""
    recorded = ((state["state"].get("config") or {}).get("data") or {}).get("content_id")
    if not recorded:
        logger.warning("training state %s records no feature store identity; not checked", path)
    elif recorded != store.content_id:
        raise ValueError(
            f"training state {path} was trained on feature store content {recorded}, but "
            f"{store.root} holds content {store.content_id}: refusing to resume on different "
            "data. Train the new data in another run directory, or point training.data.path "
            "back at the original store."
        )


def make_loader(
    config: TrainConfig, accelerator: Accelerator, start_step: int, store=None
) -> DataLoader:
    if store is None:
        store = open_store(config, accelerator)
    rank = accelerator.process_index
    # flips / label drops / caption draws differ per rank and per resume point (workers add their seed)
    seed = config.seed + 7919 * rank + start_step
    if config.data.text_path:
        dataset = text_dataset(config, store, seed)
    else:
        dataset = FeatureDataset(
            store,
            random_flip=config.data.random_flip,
            p_uncond=config.p_uncond,
            null_label=config.null_label(),
            seed=seed,
        )
    order = ResumableDataOrder(
        len(dataset),
        config.batch_size,
        rank,
        accelerator.num_processes,
        config.seed,
        start_step,
    )
    # Each DataLoader item is a whole per-rank batch: the rows of one step are read with one sorted
    # read per shard (`FeatureDataset.get_batch`), not item by item; the order is `order`'s.
    batches = BatchSampler(order, config.batch_size // accelerator.num_processes, drop_last=True)
    return DataLoader(
        BatchReads(dataset),
        batch_size=None,
        sampler=batches,
        num_workers=config.data.num_workers,
        pin_memory=accelerator.device.type == "cuda",
        persistent_workers=config.data.num_workers > 0,
    )


def _check_store_shape(store, config: TrainConfig) -> None:
    """Fail before training when the network input does not match the stored features."""
    kw = config.model_kwargs()
    if config.data.kind == "latent_moments":
        shape = store.fields["moments"][0]  # (V, 2·C, h, w): [orig(, flipped)] moments
        got = (shape[1] // 2, shape[2], shape[3])
        stored = store.meta.get("scale_factor")  # another scale is another latent space (§4.5)
        if stored is not None and not math.isclose(stored, config.data.scale_factor, rel_tol=1e-6):
            raise ValueError(
                f"training.data.scale_factor is {config.data.scale_factor} but latent store "
                f"{store.root} was made for scale_factor {stored}"
            )
    else:
        got = tuple(store.fields["x"][0])  # (C, H, W)
    want = (kw["in_chans"], kw["img_size"], kw["img_size"])
    if got != want:
        raise ValueError(
            f"model.in_chans/model.img_size give network inputs {want} but store {store.root} "
            f"yields {got} ({config.data.kind})"
        )
