"""Cases 5, 9 and 10 of docs/reliability.md: a feature store is checked on opening and verified
before training; two writers never share a folder; a settings mismatch says how to recover."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from uvit_pipeline._io import LockedError, StagingLock
from uvit_pipeline.data.feature_store import (
    FeatureStore,
    FeatureStoreCorrupt,
    FeatureStoreMismatch,
)
from uvit_pipeline.data.store_writer import FeatureStoreWriter

from .conftest import LockHolder

META = {"kind": "pixels", "resolution": 4}
FIELDS = {"x": ((3, 4, 4), "uint8"), "label": ((), "int64")}


def _store(root, n=10, seed=0, labels_below=10):
    rng = np.random.default_rng(seed)
    with FeatureStoreWriter(root, META, FIELDS, shard_size=4) as w:
        w.add(
            {
                "x": rng.integers(0, 256, (n, 3, 4, 4), dtype=np.uint8),
                "label": rng.permutation(np.arange(n) % labels_below).astype(np.int64),
            },
            [{"path": f"{i}.png"} for i in range(n)],
        )
    return root


def test_unparseable_meta_json_is_named(tmp_path):
    root = _store(tmp_path / "s")
    (root / "meta.json").write_text('{"kind": "pixels", "num_ro')
    with pytest.raises(FeatureStoreCorrupt, match=r"meta\.json is not valid JSON"):
        FeatureStore(root)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda r: (r / "shard-00001.x.npy").unlink(),
            r"shard file .*shard-00001\.x\.npy is missing",
        ),
        (
            lambda r: os.truncate(r / "shard-00001.x.npy", 200),
            r"shard-00001\.x\.npy has 200 bytes, its shape implies 320",
        ),
        (
            lambda r: np.save(r / "shard-00002.label.npy", np.zeros(3, np.int64)),
            r"shard-00002\.label\.npy holds int64 \(3,\), meta\.json implies int64 \(2,\)",
        ),
        (lambda r: (r / "manifest.parquet").unlink(), r"manifest\.parquet is missing"),
    ],
    ids=["missing-shard", "truncated-shard", "short-labels", "missing-manifest"],
)
def test_opening_checks_every_shard_and_the_manifest(tmp_path, damage, message):
    root = _store(tmp_path / "s")
    damage(root)
    with pytest.raises(FeatureStoreCorrupt, match=message):
        FeatureStore(root)


def test_row_counts_must_agree(tmp_path):
    root = _store(tmp_path / "s")
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "num_rows": 12}))
    with pytest.raises(
        FeatureStoreCorrupt, match="manifest.parquet has 10 rows but meta.json says 12"
    ):
        FeatureStore(root)


def test_verify_detects_bytes_changed_in_place(tmp_path):
    root = _store(tmp_path / "s")
    store = FeatureStore(root)
    store.verify(progress=False)  # intact
    shard = root / "shard-00001.x.npy"
    data = bytearray(shard.read_bytes())
    data[-50:] = os.urandom(50)  # same size, other pixels: opening cannot notice
    shard.write_bytes(bytes(data))
    store = FeatureStore(root)
    with pytest.raises(
        FeatureStoreCorrupt, match=r"shard-00001\.x\.npy changed since it was written"
    ):
        store.verify(progress=False)


def test_content_id_identifies_the_data(tmp_path):
    a, a2, b = _store(tmp_path / "a"), _store(tmp_path / "a2"), _store(tmp_path / "b", seed=1)
    ids = [FeatureStore(p).content_id for p in (a, a2, b)]
    assert all(isinstance(i, str) and len(i) == 64 for i in ids)
    assert ids[0] == ids[1] != ids[2]
    meta = json.loads((a / "meta.json").read_text())
    assert set(meta["checksums"]) == {f"shard-{s:05d}.{f}.npy" for s in range(3) for f in FIELDS}


def test_check_labels(tmp_path):
    store = FeatureStore(_store(tmp_path / "s", labels_below=5))
    store.check_labels(5)
    with pytest.raises(ValueError, match=r"2 of 10 labels lie outside \[0, 4\) \(min 0, max 4"):
        store.check_labels(4)


def test_a_second_writer_on_the_same_folder_is_refused(tmp_path, short_lock_wait, monkeypatch):
    root = tmp_path / "s"
    holder = LockHolder(root)  # another process writing this folder
    try:
        with pytest.raises(
            LockedError, match=rf"in use by another run \(pid {holder.pid} on host "
        ):
            FeatureStoreWriter(root, META, FIELDS, 4)
    finally:
        holder.close()
    assert not root.exists() or not any(root.iterdir())  # the refused writer wrote nothing
    _store(root)  # the holder is gone: writing works

    errors = []
    w = FeatureStoreWriter(tmp_path / "t", META, FIELDS, 4)  # a live writer in this process
    thread = threading.Thread(
        target=lambda: errors.append(
            pytest.raises(LockedError, FeatureStoreWriter, w.root, META, FIELDS, 4)
        )
    )
    thread.start()
    thread.join()
    assert errors and f"pid {os.getpid()}" in str(errors[0].value)
    w.release()

    monkeypatch.setattr(StagingLock, "wait_s", 10.0)  # the default
    holder = LockHolder(root)
    holder.kill()  # kill -9 mid-extraction: the next run may start at once, the lock is retried
    FeatureStoreWriter(root, META, FIELDS, 4).release()  # until the kernel has dropped it
    holder.proc.wait(timeout=30)


def test_the_lock_file_lies_next_to_the_folder(tmp_path):
    root = tmp_path / "s"
    w = FeatureStoreWriter(root, META, FIELDS, 4)
    assert (tmp_path / ".s.lock").is_file() and not list(root.glob("*.lock"))
    w.add({"x": np.zeros((4, 3, 4, 4), np.uint8), "label": np.zeros(4, np.int64)})
    w.close()
    os.rename(root, tmp_path / "moved")  # a finished folder moves away whole
    assert len(FeatureStore(tmp_path / "moved")) == 4


def test_a_changed_shard_size_says_how_to_recover(tmp_path):
    root = tmp_path / "staging" / "abc"
    with pytest.raises(RuntimeError, match="crash"):
        with FeatureStoreWriter(root, META, FIELDS, shard_size=4) as w:
            w.add({"x": np.zeros((5, 3, 4, 4), np.uint8), "label": np.zeros(5, np.int64)})
            raise RuntimeError("crash")
    with pytest.raises(FeatureStoreMismatch) as err:
        FeatureStoreWriter(root, META, FIELDS, shard_size=8)
    msg = str(err.value)
    assert "shard_size: store=4 expected=8" in msg
    assert f"delete {root}" in msg and "re-run with the original settings" in msg
    FeatureStoreWriter(root, META, FIELDS, shard_size=4).release()  # the refusal left the lock free


def _big_store(root):
    """4 shards of 4 rows of 32 KiB: each shard file is larger than the 3 sampled blocks."""
    rng = np.random.default_rng(0)
    fields = {"x": ((8, 64, 64), "uint8"), "label": ((), "int64")}
    with FeatureStoreWriter(root, META, fields, shard_size=8) as w:
        w.add(
            {"x": rng.integers(0, 256, (32, 8, 64, 64), np.uint8), "label": np.zeros(32, np.int64)}
        )
    return root


def _zero_fill(path):
    os.truncate(path, 0)
    os.truncate(path, 8 * 8 * 64 * 64 + 128)  # same size, all zero bytes


def _swap(a, b):
    tmp = a.with_name("tmp")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)


@pytest.mark.parametrize(
    "damage",
    [
        lambda r: _zero_fill(r / "shard-00001.x.npy"),
        lambda r: _swap(r / "shard-00001.x.npy", r / "shard-00002.x.npy"),
        lambda r: _flip(r / "shard-00002.x.npy", -10),  # in the last sampled block
        lambda r: _flip(r / "shard-00001.x.npy", 130_000),  # in the middle sampled block
    ],
    ids=["zero-filled", "swapped", "changed-end", "changed-middle"],
)
def test_the_quick_check_catches_a_zeroed_swapped_or_changed_shard(tmp_path, damage):
    root = _big_store(tmp_path / "s")
    assert (root / "shard-00001.x.npy").stat().st_size > 3 * 65536
    FeatureStore(root).check(progress=False)  # intact
    damage(root)
    store = FeatureStore(root)  # opening cannot notice: sizes and headers of the ends are right
    with pytest.raises(FeatureStoreCorrupt, match=r"shard-0000[12]\.x\.npy changed since"):
        store.check(progress=False)
    with pytest.raises(FeatureStoreCorrupt, match=r"shard-0000[12]\.x\.npy changed since"):
        store.verify(progress=False)


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset, 0 if offset >= 0 else 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([255 - b[0]]))


def test_only_the_full_verify_sees_a_change_between_the_sampled_blocks(tmp_path, capsys):
    """The quick check's limit, and the full check on demand (`python -m uvit_pipeline.data.verify`)."""
    from uvit_pipeline.data.verify import main

    root = _big_store(tmp_path / "s")
    _flip(root / "shard-00001.x.npy", 80_000)  # between the first and the middle block
    FeatureStore(root).check(progress=False)
    assert main([str(root), "--quick"]) == 0
    assert main([str(root)]) == 1
    assert "shard-00001.x.npy changed since it was written" in capsys.readouterr().err


def test_a_store_without_fingerprints_is_verified_in_full(tmp_path, caplog):
    root = _store(tmp_path / "s")
    meta = json.loads((root / "meta.json").read_text())
    del meta["fingerprints"]  # written before fingerprints existed
    (root / "meta.json").write_text(json.dumps(meta))
    _flip(root / "shard-00001.x.npy", -1)
    with pytest.raises(FeatureStoreCorrupt, match=r"shard-00001\.x\.npy changed since"):
        FeatureStore(root).check(progress=False)
    assert "records no shard fingerprints" in caplog.text
