"""Text-to-image training data: open the caption store and check it against the config (§1.1, §7.3)."""

from __future__ import annotations

from ..data import CaptionedFeatureDataset, FeatureStore, TextFeatures
from .config import TrainConfig

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
