"""Sharded feature store: the memory-mapped reader (writer: store_writer.py; format: store_format.py) (docs/architecture.md, "Feature store").

Directory layout (docs/data.md, docs/reliability.md):
  meta.json                       caller meta + fields/shard_size; at close also num_rows, num_skipped,
                                  checksums (sha256 per shard file), manifest_sha256, content_id,
                                  fingerprints (sha256 of each shard file's size + 3 sampled blocks)
  shard-00000.<field>.npy         fixed-shape arrays, `shard_size` rows (the last shard may be short)
  manifest-parts/00000.json       sha256 of the shard's files + skipped inputs, written with the shard
  manifest-parts/00000.parquet    manifest rows of one shard; written last = the shard's commit mark
  manifest.parquet                all rows (row, shard, offset, label, caller columns), at close
  report.parquet                  inputs skipped by the producer (path, reason, ...), at close
A writer holds a `StagingLock` (`<parent>/.<name>.lock`) for its life, so two runs never write the
same folder; a reader checks the layout on opening, the fingerprints in `check()` (cheap: every
training start) and the full checksums in `verify()` (on demand: `python -m uvit_pipeline.data.verify`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .store_format import (
    NPY_HEADER_READERS,
    REPORT_COLUMNS,
    FeatureStoreCorrupt,
    FeatureStoreIncomplete,
    FeatureStoreMismatch,
    content_id,
    diff,
    file_fingerprint,
    file_sha256,
    jsonable,
    read_meta,
    shard_file,
)

log = logging.getLogger(__name__)


class FeatureStore:
    """Read-only view of a complete store; shards are memory-mapped lazily, per process.

    Opening checks the layout (meta.json parses, every shard file exists with the shape, dtype and
    size meta.json implies, row counts agree with the manifest); `check()` the content cheaply
    (fingerprints), `verify()` fully (sha256 of every file) and `check_labels()` the label range.
    """

    def __init__(self, root, max_open_shards: int = 128):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no feature store at {self.root} (missing meta.json)")
        self._meta = read_meta(self.root)
        if not self._meta.get("complete"):
            raise FeatureStoreIncomplete(
                f"feature store {self.root} is incomplete ({self._meta.get('num_rows', 0)} rows "
                "committed); re-run the writer to resume it"
            )
        self._len = int(self._meta["num_rows"])
        self._shard_size = int(self._meta["shard_size"])
        self._max_open = max(1, int(max_open_shards))
        self._manifest = None
        self._maps: OrderedDict = OrderedDict()
        self._pid = os.getpid()
        self._check_layout()

    def _check_layout(self) -> None:
        """Every file meta.json implies exists with the right shape and size (cheap: headers only)."""
        n, size = self._len, self._shard_size
        n_shards = int(self._meta["num_shards"])
        if n < 1 or n_shards != -(-n // size):
            raise FeatureStoreCorrupt(
                self.root, f"meta.json says {n} rows in {n_shards} shards of {size}"
            )
        manifest = self.root / "manifest.parquet"
        if not manifest.is_file():
            raise FeatureStoreCorrupt(self.root, f"{manifest} is missing")
        try:
            m_rows = pq.read_metadata(manifest).num_rows
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise FeatureStoreCorrupt(self.root, f"{manifest} is unreadable ({e})") from None
        if m_rows != n:
            raise FeatureStoreCorrupt(
                self.root, f"{manifest} has {m_rows} rows but meta.json says {n}"
            )
        last = n_shards - 1
        for field, (shape, dtype) in self.fields.items():
            # Headers of the first and last shard are read; full shards share one shape, hence one
            # file size, so the others only need a stat (opening stays cheap for 1000s of shards).
            full = self._check_npy(shard_file(self.root, 0, field), (min(size, n), *shape), dtype)
            self._check_npy(shard_file(self.root, last, field), (n - last * size, *shape), dtype)
            for s in range(1, last):
                path = shard_file(self.root, s, field)
                try:
                    actual = path.stat().st_size
                except FileNotFoundError:
                    raise FeatureStoreCorrupt(self.root, f"shard file {path} is missing") from None
                if actual != full:
                    raise FeatureStoreCorrupt(
                        self.root,
                        f"{path} has {actual} bytes, its shape implies {full} (truncated?)",
                    )

    def _check_npy(self, path: Path, shape: tuple, dtype: np.dtype) -> int:
        """Check one shard file's .npy header and size; returns the size."""
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = NPY_HEADER_READERS.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy format version {version}")
                got_shape, fortran, got_dtype = read_header(f)
                offset, actual = f.tell(), os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            raise FeatureStoreCorrupt(self.root, f"shard file {path} is missing") from None
        except (OSError, ValueError) as e:
            raise FeatureStoreCorrupt(self.root, f"{path} is not a valid .npy file ({e})") from None
        if tuple(got_shape) != shape or got_dtype != dtype or fortran:
            raise FeatureStoreCorrupt(
                self.root,
                f"{path} holds {got_dtype} {tuple(got_shape)}, meta.json implies {dtype} {shape}",
            )
        expected = offset + int(np.prod(shape)) * dtype.itemsize
        if actual != expected:
            raise FeatureStoreCorrupt(
                self.root, f"{path} has {actual} bytes, its shape implies {expected} (truncated?)"
            )
        return actual

    @property
    def content_id(self) -> str | None:
        """sha256 identity of the store's content (shards + manifest); None for format-1 stores."""
        return self._meta.get("content_id")

    @property
    def report(self) -> pd.DataFrame:
        """Inputs the producer skipped (path, reason, ...); empty when none or not recorded."""
        path = self.root / "report.parquet"
        return pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=REPORT_COLUMNS)

    def _recorded_files(self) -> list[tuple[Path, str]]:
        """(file, recorded sha256) of every shard file and the manifest, after checking that meta.json
        lists exactly the shard files and that its content_id matches its checksums."""
        sums, manifest_sha = self._meta.get("checksums"), self._meta.get("manifest_sha256")
        if not sums or not manifest_sha:
            raise FeatureStoreCorrupt(
                self.root,
                f"meta.json records no checksums (format_version "
                f"{self._meta.get('format_version')}, written by an older version), so its "
                "content cannot be verified",
            )
        if content_id(sums, manifest_sha) != self._meta.get("content_id"):
            raise FeatureStoreCorrupt(
                self.root, "meta.json's content_id disagrees with its checksums"
            )
        expected = {
            f"shard-{s:05d}.{k}.npy"
            for s in range(int(self._meta["num_shards"]))
            for k in self.fields
        }
        if set(sums) != expected:
            raise FeatureStoreCorrupt(
                self.root, "meta.json's checksums do not list exactly its shard files"
            )
        files = [(self.root / name, want) for name, want in sums.items()]
        return [*files, (self.root / "manifest.parquet", manifest_sha)]

    def verify(self, progress: bool = True) -> None:
        """Recompute the sha256 of every shard file and the manifest against meta.json.

        Raises `FeatureStoreCorrupt` naming the first file whose bytes changed (reads all data once).
        The full check, on demand: `python -m uvit_pipeline.data.verify <store>` or
        `training.data.verify: full`; `check()` is the cheap one training runs by default.
        """
        files = self._recorded_files()
        total = sum(p.stat().st_size for p, _ in files)
        with tqdm(
            total=total, unit="B", unit_scale=True, desc="verify store", disable=not progress
        ) as bar:
            for path, want in files:
                got = file_sha256(path, bar)
                if got != want:
                    raise FeatureStoreCorrupt(
                        self.root,
                        f"{path} changed since it was written (sha256 {got}, recorded {want})",
                    )
        log.info(
            "feature store %s verified (%d files, content_id %s)",
            self.root,
            len(files),
            self.content_id,
        )

    def check(self, progress: bool = True) -> None:
        """The cheap content check of every training start: meta.json's checksums and content_id
        agree, the manifest's sha256 (a small file), and each shard file's fingerprint (its size and
        sha256 of its first, middle and last 64 KiB, recorded when it was written): catches a
        truncated, swapped or zero-filled shard and changes within those blocks, reading ~192 KiB
        per shard file. A store written before fingerprints existed is verified in full instead.
        """
        files = self._recorded_files()
        prints = self._meta.get("fingerprints")
        if not prints:
            log.warning(
                "feature store %s records no shard fingerprints (written by an older version): "
                "verifying every file in full instead of the quick check",
                self.root,
            )
            return self.verify(progress=progress)
        *shards, (manifest, manifest_sha) = files
        if set(prints) != {p.name for p, _ in shards}:
            raise FeatureStoreCorrupt(
                self.root, "meta.json's fingerprints do not list exactly its shard files"
            )
        got = file_sha256(manifest)
        if got != manifest_sha:
            raise FeatureStoreCorrupt(
                self.root,
                f"{manifest} changed since it was written (sha256 {got}, recorded {manifest_sha})",
            )
        for path, _ in tqdm(shards, desc="check store", unit="file", disable=not progress):
            try:
                got = file_fingerprint(path)
            except FileNotFoundError:
                raise FeatureStoreCorrupt(self.root, f"shard file {path} is missing") from None
            if got != prints[path.name]:
                raise FeatureStoreCorrupt(
                    self.root,
                    f"{path} changed since it was written (its size or sampled blocks differ from "
                    "the fingerprint recorded in meta.json)",
                )
        log.info(
            "feature store %s checked (%d files: sizes, sampled blocks, manifest; content_id %s)",
            self.root,
            len(files),
            self.content_id,
        )

    def check_labels(self, num_classes: int) -> None:
        """Raise `ValueError` unless every label lies in [0, num_classes)."""
        labels = self.read_all("label")
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if bad.size:
            raise ValueError(
                f"feature store {self.root}: {bad.size} of {labels.size} labels lie outside "
                f"[0, {num_classes}) (min {labels.min()}, max {labels.max()}, first at row "
                f"{bad[0]}); the model's num_classes does not fit this data"
            )

    @property
    def meta(self) -> dict:
        return json.loads(json.dumps(self._meta))  # a copy the caller may mutate

    @property
    def fields(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        return {
            k: (tuple(f["shape"]), np.dtype(f["dtype"])) for k, f in self._meta["fields"].items()
        }

    @property
    def manifest(self) -> pd.DataFrame:
        if self._manifest is None:
            self._manifest = pd.read_parquet(self.root / "manifest.parquet")
        return self._manifest

    def __len__(self) -> int:
        return self._len

    def __getstate__(self) -> dict:
        # Memmaps are per process: DataLoader workers re-open their own.
        return {**self.__dict__, "_maps": OrderedDict(), "_manifest": None}

    def _map(self, shard: int, field: str) -> np.ndarray:
        if self._pid != os.getpid():  # forked worker: do not share the parent's maps
            self._maps, self._pid = OrderedDict(), os.getpid()
        key = (shard, field)
        m = self._maps.get(key)
        if m is None:
            m = np.load(shard_file(self.root, shard, field), mmap_mode="r")
            self._maps[key] = m
            if len(self._maps) > self._max_open:  # bounded: every map holds a file descriptor
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(key)
        return m

    def _locate(self, idx: int) -> tuple[int, int]:
        i = int(idx)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"index {idx} out of range for feature store of {self._len} rows")
        return divmod(i, self._shard_size)

    def get(self, field: str, idx: int) -> np.ndarray:
        """Row `idx` of `field` as an in-memory array (shape = the field's shape)."""
        if field not in self._meta["fields"]:
            raise KeyError(f"unknown field {field!r}; store has {sorted(self._meta['fields'])}")
        shard, off = self._locate(idx)
        return np.array(self._map(shard, field)[off])

    def take(self, field: str, rows, sub=None) -> np.ndarray:
        """Rows `rows` of `field` (len(rows), *shape), in the given order, read shard by shard.

        Rows are sorted, grouped by shard and read with one fancy index per shard memmap, so a batch
        touches each shard once and its pages in file order. With `sub` (one int per row), only
        entry `sub[i]` of the first axis of row i is read: (len(rows), *shape[1:]), e.g. one view of
        a (V, 8, h, w) latent row.
        """
        if field not in self._meta["fields"]:
            raise KeyError(f"unknown field {field!r}; store has {sorted(self._meta['fields'])}")
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        bad = (rows < 0) | (rows >= self._len)
        if bad.any():
            raise IndexError(
                f"rows {rows[bad][:5].tolist()} out of range for feature store of {self._len} rows"
            )
        shape, dtype = self.fields[field]
        if sub is not None:
            sub = np.asarray(sub, dtype=np.int64).reshape(-1)
            if not shape or len(sub) != len(rows) or ((sub < 0) | (sub >= shape[0])).any():
                raise IndexError(
                    f"sub must hold one index in [0, {shape[0] if shape else 0}) per row of "
                    f"field {field!r}, got {sub[:5].tolist()} for {len(rows)} rows"
                )
            shape = shape[1:]
        out = np.empty((len(rows), *shape), dtype=dtype)
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        shards = srt // self._shard_size
        bounds = [0, *(np.flatnonzero(np.diff(shards)) + 1).tolist(), len(srt)]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
            if lo == hi:
                continue
            shard = int(shards[lo])
            local = srt[lo:hi] - shard * self._shard_size
            m = self._map(shard, field)
            out[order[lo:hi]] = m[local] if sub is None else m[local, sub[order[lo:hi]]]
        return out

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        return {k: self.get(k, idx) for k in self._meta["fields"]}

    def read_all(self, field: str) -> np.ndarray:
        """Whole `field` as one in-memory array (N, *shape); for small stores and tests."""
        n_shards = int(self._meta["num_shards"])
        return np.concatenate([np.asarray(self._map(s, field)) for s in range(n_shards)])

    def verify_meta(self, expected: dict) -> None:
        """Raise `FeatureStoreMismatch` naming every key whose value differs from `expected`."""
        mismatch = diff(self._meta, jsonable(expected))
        if mismatch:
            raise FeatureStoreMismatch(
                self.root,
                mismatch,
                "Point training.data.path at a store made with the expected settings, or "
                "re-extract the features with them.",
            )


__all__ = [
    "FeatureStore",
    "FeatureStoreCorrupt",
    "FeatureStoreIncomplete",
    "FeatureStoreMismatch",
]
