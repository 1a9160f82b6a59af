"""Cases 5-9 of docs/reliability.md in training: the store is verified before the first step, a
corrupt newest state falls back to an intact one, a state never resumes on other data, a boolean
`mixed_precision: no` is accepted, and two runs never share a run directory."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import yaml

from uvit_pipeline._io import LockedError
from uvit_pipeline.data.feature_store import FeatureStore, FeatureStoreCorrupt
from uvit_pipeline.launch import LaunchSpec
from uvit_pipeline.training import TrainConfig, train
from uvit_pipeline.training.checkpoint import load_latest_training_state

from ..training.conftest import TINY_MODEL, tiny_config, write_pixel_store
from .conftest import LockHolder


def _starts(run_dir) -> list[dict]:
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    return [e for e in events if e["event"] == "start"]


def _flip_bytes(path, n=64) -> None:
    data = bytearray(path.read_bytes())
    data[-n:] = bytes(255 - b for b in data[-n:])  # same size, other values
    path.write_bytes(bytes(data))


def test_corrupt_newest_state_falls_back_to_an_intact_one(tmp_path, caplog):
    store = write_pixel_store(tmp_path / "store")
    run_dir = tmp_path / "run"
    train(tiny_config(run_dir, store, n_steps=6, save_interval=3))
    newest = run_dir / "ckpts" / "6.ckpt"
    _flip_bytes(newest / "nnet.safetensors")  # weights changed in place: loads, but wrong
    with caplog.at_level(logging.WARNING):
        train(tiny_config(run_dir, store, n_steps=8, save_interval=3))
    assert _starts(run_dir)[-1]["resumed_from"].endswith("3.ckpt")
    assert f"training state {newest} is corrupt: nnet.safetensors differs" in caplog.text

    ckpts = run_dir / "ckpts"  # now 6 (rewritten, intact) and 8; 3 pruned by keep_last=2
    (ckpts / "8.ckpt" / "state.json").write_text("{")
    path, state = load_latest_training_state(ckpts)
    assert path.name == "6.ckpt" and state["state"]["step"] == 6
    (ckpts / "6.ckpt" / "optimizer.pt").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match=r"no intact training state(.|\n)*optimizer\.pt differs"):
        load_latest_training_state(ckpts)


def test_a_state_never_resumes_on_other_data(tmp_path):
    store = write_pixel_store(tmp_path / "store")
    old_id = FeatureStore(store).content_id
    run_dir = tmp_path / "run"
    train(tiny_config(run_dir, store, n_steps=3, save_interval=3))
    state = json.loads((run_dir / "ckpts" / "3.ckpt" / "state.json").read_text())
    assert state["config"]["data"]["content_id"] == old_id

    shutil.rmtree(store)
    write_pixel_store(store, seed=1)  # re-extracted: same path, same settings, other data
    new_id = FeatureStore(store).content_id
    with pytest.raises(ValueError, match=rf"content {old_id}, but .* holds content {new_id}"):
        train(tiny_config(run_dir, store, n_steps=6, save_interval=3))
    with pytest.raises(ValueError, match=r"training\.data\.content_id is 'abc'"):
        cfg = tiny_config(tmp_path / "run2", store)
        cfg.data.content_id = "abc"
        train(cfg)


def test_training_verifies_the_store_and_its_labels_before_the_first_step(tmp_path):
    store = write_pixel_store(tmp_path / "store", num_classes=3)
    conditional = {**TINY_MODEL, "num_classes": 3}
    with pytest.raises(ValueError, match=r"labels lie outside \[0, 2\)"):  # class 2 = null class
        train(tiny_config(tmp_path / "a", store, model=conditional, p_uncond=0.1))
    assert not (tmp_path / "a" / "ckpts" / "3.ckpt").exists()

    _flip_bytes(store / "shard-00001.x.npy")
    with pytest.raises(
        FeatureStoreCorrupt, match=r"shard-00001\.x\.npy changed since it was written"
    ):
        train(tiny_config(tmp_path / "b", store))
    assert not list((tmp_path / "b" / "ckpts").iterdir())


def test_a_second_run_in_the_same_run_dir_is_refused(tmp_path, short_lock_wait):
    store = write_pixel_store(tmp_path / "store")
    run_dir = tmp_path / "run"
    holder = LockHolder(run_dir)  # the training child of another run
    try:
        with pytest.raises(LockedError, match=rf"run directory .*pid {holder.pid} on host"):
            train(tiny_config(run_dir, store, n_steps=3))
    finally:
        holder.close()
    assert not (run_dir / "ckpts").exists()
    assert train(tiny_config(run_dir, store, n_steps=3)).is_dir()  # released: runs


def test_mixed_precision_no_from_yaml_is_accepted():
    params = yaml.safe_load("mixed_precision: no\nmixed_precision_true: yes\n")
    assert params["mixed_precision"] is False  # what YAML (and --params) deliver
    cfg = tiny_config("run", "store", mixed_precision=params["mixed_precision"]).validate()
    assert cfg.mixed_precision == "no" and cfg.to_dict()["mixed_precision"] == "no"
    assert TrainConfig.from_dict(cfg.to_dict()).mixed_precision == "no"
    with pytest.raises(ValueError, match=r"training\.mixed_precision .* got True \(YAML"):
        tiny_config("run", "store", mixed_precision=True).validate()
    assert LaunchSpec.from_params({"mixed_precision": False}).mixed_precision == "no"
    with pytest.raises(ValueError, match=r"got True \(YAML"):
        LaunchSpec.from_params({"mixed_precision": True})
