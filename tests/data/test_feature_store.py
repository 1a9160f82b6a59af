"""Feature store: round trip, memmap reading, meta checks, atomic shards, resume after a crash."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from uvit_pipeline.data import (
    FeatureStore,
    FeatureStoreIncomplete,
    FeatureStoreMismatch,
    FeatureStoreWriter,
)

META = {
    "kind": "pixels",
    "resolution": 4,
    "crop": "adm_center",
    "flip": "random_at_train_time",
    "dataset": "unit-test",
    "encoder": None,
}
FIELDS = {"x": ((3, 4, 4), "uint8"), "label": ((), "int64")}


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 4, 4), dtype=np.uint8)
    label = rng.integers(0, 10, n).astype(np.int64)
    rows = [{"path": f"img{i}.png", "caption_ids": [i, i + 100]} for i in range(n)]
    return x, label, rows


def _write(root, n=10, batch=3, shard_size=4, start=0, stop_after=None):
    x, label, rows = _data(n)
    with FeatureStoreWriter(root, META, FIELDS, shard_size=shard_size) as w:
        for i in range(max(start, w.resume_row), n, batch):
            if stop_after is not None and i >= stop_after:
                raise RuntimeError("simulated crash")  # the writer releases its lock, as in a crash
            j = min(i + batch, n)
            w.add({"x": x[i:j], "label": label[i:j]}, rows[i:j])
    return x, label


def test_round_trip(tmp_path):
    x, label = _write(tmp_path / "s")
    store = FeatureStore(tmp_path / "s")
    assert len(store) == 10
    assert store.fields == {"x": ((3, 4, 4), np.dtype("uint8")), "label": ((), np.dtype("int64"))}
    for i in range(10):
        item = store[i]
        np.testing.assert_array_equal(item["x"], x[i])
        assert item["label"] == label[i] and item["label"].dtype == np.int64
    np.testing.assert_array_equal(store.get("x", -1), x[-1])
    np.testing.assert_array_equal(store.read_all("x"), x)
    m = store.manifest
    assert m["row"].tolist() == list(range(10))
    assert m["shard"].tolist() == [0] * 4 + [1] * 4 + [2] * 2
    assert m["offset"].tolist() == [0, 1, 2, 3] * 2 + [0, 1]
    assert m["label"].tolist() == label.tolist()
    assert m["path"][7] == "img7.png" and list(m["caption_ids"][7]) == [7, 107]
    meta = store.meta
    assert meta["complete"] and meta["num_rows"] == 10 and meta["shard_size"] == 4
    assert meta["kind"] == "pixels"
    assert sorted(p.name for p in (tmp_path / "s").glob("shard-*")) == [
        f"shard-{k:05d}.{f}.npy" for k in range(3) for f in ("label", "x")
    ]
    assert not list((tmp_path / "s" / "manifest-parts").iterdir())
    with pytest.raises(IndexError):
        store[10]
    with pytest.raises(KeyError, match="moments"):
        store.get("moments", 0)


def test_take_reads_rows_in_order_and_one_entry_of_each(tmp_path):
    x, label = _write(tmp_path / "s")
    store = FeatureStore(tmp_path / "s")
    rows = [9, 0, 5, 5, 3]  # across the three shards, unsorted, repeated
    np.testing.assert_array_equal(store.take("x", rows), x[rows])
    np.testing.assert_array_equal(store.take("label", rows), label[rows])
    sub = [2, 0, 1, 1, 2]  # one channel of each row
    np.testing.assert_array_equal(store.take("x", rows, sub=sub), x[rows, sub])
    with pytest.raises(IndexError, match=r"sub must hold one index in \[0, 3\) per row"):
        store.take("x", rows, sub=[0, 0, 0, 0, 3])
    with pytest.raises(IndexError, match="sub must hold one index"):
        store.take("x", rows, sub=[0])
    with pytest.raises(IndexError, match=r"rows \[10\] out of range"):
        store.take("x", [10])


def test_reads_are_memory_mapped(tmp_path):
    _write(tmp_path / "s")
    store = FeatureStore(tmp_path / "s")
    assert isinstance(store._map(0, "x"), np.memmap)
    assert not isinstance(store.get("x", 0), np.memmap)  # items are in-memory copies

    clone = pickle.loads(pickle.dumps(store))  # what DataLoader workers receive
    assert not clone._maps
    np.testing.assert_array_equal(clone.get("x", 5), store.get("x", 5))


def test_verify_meta_names_differing_fields(tmp_path):
    _write(tmp_path / "s")
    store = FeatureStore(tmp_path / "s")
    store.verify_meta({"kind": "pixels", "resolution": 4})
    with pytest.raises(FeatureStoreMismatch) as err:
        store.verify_meta({"kind": "pixels", "resolution": 8, "scale_factor": 0.18215})
    msg = str(err.value)
    assert "resolution: store=4 expected=8" in msg
    assert "scale_factor: store='<missing>' expected=0.18215" in msg
    assert "kind" not in msg
    assert set(err.value.mismatches) == {"resolution", "scale_factor"}


def test_writer_refuses_different_meta(tmp_path):
    _write(tmp_path / "s", stop_after=None)
    with pytest.raises(FeatureStoreMismatch, match="crop"):
        FeatureStoreWriter(tmp_path / "s", {**META, "crop": "coco_center_lanczos"}, FIELDS, 4)
    with pytest.raises(FeatureStoreMismatch, match="shard_size"):
        FeatureStoreWriter(tmp_path / "s", META, FIELDS, 8)
    with pytest.raises(ValueError, match="reserved"):
        FeatureStoreWriter(tmp_path / "t", {**META, "num_rows": 3}, FIELDS, 4)


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta.json"):
        FeatureStore(tmp_path / "none")
    FeatureStoreWriter(tmp_path / "p", META, FIELDS, 4)
    with pytest.raises(FeatureStoreIncomplete, match="incomplete"):
        FeatureStore(tmp_path / "p")


def test_add_validates_batches(tmp_path):
    w = FeatureStoreWriter(tmp_path / "s", META, FIELDS, 4)
    x, label, rows = _data(2)
    with pytest.raises(ValueError, match="'x'.*float64"):
        w.add({"x": x.astype(float), "label": label}, rows)
    with pytest.raises(ValueError, match="shape"):
        w.add({"x": x[:, :2], "label": label}, rows)
    with pytest.raises(ValueError, match="rows has 1"):
        w.add({"x": x, "label": label}, rows[:1])
    with pytest.raises(ValueError, match="fields"):
        w.add({"x": x}, rows)


def test_shard_write_is_atomic(tmp_path, monkeypatch):
    real_save = np.save

    def failing_save(f, arr):
        f.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", failing_save)
    x, label, rows = _data(6)
    w = FeatureStoreWriter(tmp_path / "s", META, FIELDS, 4)
    with pytest.raises(OSError, match="disk full"):
        w.add({"x": x, "label": label}, rows)
    names = [p.name for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert names == ["meta.json"]  # no partial .npy, no temp file, no manifest part
    monkeypatch.setattr(np, "save", real_save)
    w = FeatureStoreWriter(tmp_path / "s", META, FIELDS, 4)
    assert w.resume_row == 0


@pytest.mark.parametrize("stop_after", [0, 4, 10, 12])
def test_resume_after_crash_equals_uninterrupted(tmp_path, stop_after):
    # shard_size 4, batches of 2: stop_after=10 crashes after 2.5 shards were fed.
    x, label = _write(tmp_path / "ref", n=14, batch=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _write(tmp_path / "s", n=14, batch=2, stop_after=stop_after)
    w = FeatureStoreWriter(tmp_path / "s", META, FIELDS, 4)
    assert w.resume_row == (stop_after // 4) * 4  # a partial shard is redone
    w.release()
    _write(tmp_path / "s", n=14, batch=2)
    ref, got = FeatureStore(tmp_path / "ref"), FeatureStore(tmp_path / "s")
    assert len(got) == 14
    np.testing.assert_array_equal(got.read_all("x"), x)
    np.testing.assert_array_equal(got.read_all("label"), label)
    pd.testing.assert_frame_equal(got.manifest, ref.manifest)
    assert got.meta == ref.meta


def test_resume_when_crashed_during_close(tmp_path):
    # The short final shard was committed but meta/manifest were not finalised.
    x, label, rows = _data(6)
    w = FeatureStoreWriter(tmp_path / "s", META, FIELDS, 4)
    w.add({"x": x, "label": label}, rows)
    w._flush()  # what close() does first
    w.release()  # the crashed process's lock dies with it
    w = FeatureStoreWriter(tmp_path / "s", META, FIELDS, 4)
    assert w.resume_row == 6
    with pytest.raises(RuntimeError, match="complete"):
        w.add({"x": x[:1], "label": label[:1]}, rows[:1])
    w.close()
    np.testing.assert_array_equal(FeatureStore(tmp_path / "s").read_all("x"), x)


def test_reopening_a_complete_store_is_a_no_op(tmp_path):
    _write(tmp_path / "s")
    before = json.loads((tmp_path / "s" / "meta.json").read_text())
    with FeatureStoreWriter(tmp_path / "s", META, FIELDS, 4) as w:
        assert w.resume_row == 10
    assert json.loads((tmp_path / "s" / "meta.json").read_text()) == before
