"""Sharded feature store: streaming, resumable writer and memory-mapped reader (architecture §5).

Directory layout (docs/data.md):
  meta.json                       caller meta + fields/shard_size (+ num_rows, complete=True at close)
  shard-00000.<field>.npy         fixed-shape arrays, `shard_size` rows (the last shard may be short)
  manifest-parts/00000.parquet    manifest rows of one shard; written last = the shard's commit mark
  manifest.parquet                all rows (row, shard, offset, label, caller columns), at close
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .._io import atomic_write

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Keys the store itself owns; caller meta may not use them.
RESERVED_KEYS = ("format_version", "fields", "shard_size", "num_rows", "num_shards", "complete")
_STATE_KEYS = ("num_rows", "num_shards", "complete")  # change as writing progresses
_PARTS = "manifest-parts"
_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


class FeatureStoreMismatch(ValueError):
    """A store's meta differs from what the caller expects; `mismatches` = {key: (store, expected)}."""

    def __init__(self, root, mismatches: dict):
        self.mismatches = mismatches
        lines = [f"  {k}: store={s!r} expected={e!r}" for k, (s, e) in mismatches.items()]
        super().__init__(f"feature store {root} does not match:\n" + "\n".join(lines))


class FeatureStoreIncomplete(RuntimeError):
    """The store exists but its writer has not finished (re-run the writer to resume)."""


def _jsonable(obj):
    """Normalise through JSON so tuples/lists and numpy scalars compare equal to the file."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _diff(store: dict, expected: dict, missing="<missing>") -> dict:
    return {
        k: (store.get(k, missing), v)
        for k, v in expected.items()
        if k not in store or store[k] != v
    }


def _shard_file(root: Path, shard: int, field: str) -> Path:
    return root / f"shard-{shard:05d}.{field}.npy"


def _part_file(root: Path, shard: int) -> Path:
    return root / _PARTS / f"{shard:05d}.parquet"


def _normalise_fields(fields: dict) -> dict:
    """{name: (shape, dtype)} -> {name: {"shape": [...], "dtype": str}} (validated)."""
    if "label" not in fields:
        raise ValueError("fields must include 'label' (shape (), int64): every store has labels")
    out = {}
    for name, spec in fields.items():
        if not _FIELD_RE.match(name):
            raise ValueError(f"field name {name!r} must be alphanumeric and start with a letter")
        try:
            shape, dtype = spec
            out[name] = {"shape": [int(s) for s in shape], "dtype": np.dtype(dtype).name}
        except (TypeError, ValueError) as e:
            raise ValueError(f"fields[{name!r}] must be (shape tuple, dtype), got {spec!r}") from e
    if out["label"] != {"shape": [], "dtype": "int64"}:
        raise ValueError(f"fields['label'] must be ((), int64), got {fields['label']!r}")
    return out


class FeatureStoreWriter:
    """Streaming, resumable writer; holds at most one shard in memory."""

    def __init__(self, root, meta: dict, fields: dict, shard_size: int = 1024):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        clash = sorted(set(meta) & set(RESERVED_KEYS))
        if clash:
            raise ValueError(f"meta may not use reserved keys {clash}")
        self.root = Path(root)
        self.shard_size = int(shard_size)
        self.fields = _normalise_fields(fields)
        self._meta = _jsonable(
            {
                **meta,
                "format_version": FORMAT_VERSION,
                "fields": self.fields,
                "shard_size": self.shard_size,
            }
        )
        self._complete = False
        self._short = False  # a short shard exists: only the final shard may be short
        self._open()
        self._buf = {
            k: np.empty((self.shard_size, *f["shape"]), dtype=f["dtype"])
            for k, f in self.fields.items()
        }
        self._rows: list[dict] = []

    # -- opening / resume ------------------------------------------------------------------
    def _open(self) -> None:
        meta_path = self.root / "meta.json"
        if meta_path.is_file():
            disk = json.loads(meta_path.read_text())
            mismatch = _diff({k: v for k, v in disk.items() if k not in _STATE_KEYS}, self._meta)
            extra = set(disk) - set(self._meta) - set(_STATE_KEYS)
            mismatch.update({k: (disk[k], "<missing>") for k in sorted(extra)})
            if mismatch:
                raise FeatureStoreMismatch(self.root, mismatch)
            self._complete = bool(disk.get("complete"))
        elif any(self.root.glob("shard-*.npy")):
            raise FileExistsError(f"{self.root} holds shards but no meta.json; refusing to mix")
        (self.root / _PARTS).mkdir(parents=True, exist_ok=True)
        for tmp in [*self.root.glob(".*.tmp"), *(self.root / _PARTS).glob(".*.tmp")]:
            tmp.unlink(missing_ok=True)  # leftovers of a crash mid-write
        if self._complete:
            self._shard, self._done = int(disk["num_shards"]), int(disk["num_rows"])
            return
        # A shard counts only if its manifest part (written last) and every field file exist.
        self._shard, self._done = 0, 0
        while _part_file(self.root, self._shard).is_file() and all(
            _shard_file(self.root, self._shard, k).is_file() for k in self.fields
        ):
            n = pq.read_metadata(_part_file(self.root, self._shard)).num_rows
            self._done += n
            self._shard += 1
            if n < self.shard_size:  # short shard = final shard (written by close)
                self._short = True
                break
        for stale in self.root.glob("shard-*.npy"):  # shards after the first gap are redone
            if int(stale.name.split(".")[0][len("shard-") :]) >= self._shard:
                stale.unlink()
        for stale in (self.root / _PARTS).glob("*.parquet"):
            if int(stale.stem) >= self._shard:
                stale.unlink()
        if self._done:
            log.info(
                "resuming feature store %s at row %d (shard %d)", self.root, self._done, self._shard
            )
        self._write_meta(complete=False)

    def _write_meta(self, complete: bool) -> None:
        state = {"num_rows": self._done, "num_shards": self._shard, "complete": complete}
        text = json.dumps({**self._meta, **state}, indent=1, sort_keys=True).encode()
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.root / "meta.json", lambda f: f.write(text))

    @property
    def resume_row(self) -> int:
        """Rows committed in complete shards; feed data from this row on."""
        return self._done

    # -- writing ---------------------------------------------------------------------------
    def add(self, batch: dict, rows=None) -> None:
        """Append a batch: `batch[field]` arrays (B, *shape); `rows` = B manifest dicts/DataFrame."""
        if self._complete or self._short:
            raise RuntimeError(f"feature store {self.root} is already complete; nothing to add")
        missing = set(self.fields) - set(batch)
        if missing or set(batch) - set(self.fields):
            raise ValueError(f"batch fields {sorted(batch)} != store fields {sorted(self.fields)}")
        arrays = {}
        for k, f in self.fields.items():
            a = np.asarray(batch[k])
            if tuple(a.shape[1:]) != tuple(f["shape"]):
                raise ValueError(f"batch[{k!r}] has shape {a.shape}, expected (B, *{f['shape']})")
            if not np.can_cast(a.dtype, f["dtype"], casting="same_kind"):
                raise ValueError(f"batch[{k!r}] dtype {a.dtype} cannot be stored as {f['dtype']}")
            arrays[k] = a
        n = len(arrays["label"])
        if any(len(a) != n for a in arrays.values()):
            raise ValueError(
                f"batch arrays differ in length: { {k: len(a) for k, a in arrays.items()} }"
            )
        if rows is None:
            rows = [{} for _ in range(n)]
        elif isinstance(rows, pd.DataFrame):
            rows = rows.to_dict("records")
        if len(rows) != n:
            raise ValueError(f"rows has {len(rows)} entries for a batch of {n}")
        i = 0
        while i < n:
            fill = len(self._rows)
            take = min(n - i, self.shard_size - fill)
            for k, a in arrays.items():
                self._buf[k][fill : fill + take] = a[i : i + take]
            self._rows.extend(rows[i : i + take])
            i += take
            if len(self._rows) == self.shard_size:
                self._flush()

    def _flush(self) -> None:
        """Commit the buffered rows as shard `self._shard` (fields first, manifest part last)."""
        n = len(self._rows)
        if n == 0:
            return
        for k in self.fields:
            arr = self._buf[k][:n]
            atomic_write(_shard_file(self.root, self._shard, k), lambda f, a=arr: np.save(f, a))
        part = pd.DataFrame(self._rows)
        labels = self._buf["label"][:n]
        if "label" in part and not np.array_equal(part["label"].to_numpy(), labels):
            raise ValueError("rows['label'] disagrees with batch['label']")
        start = self._done
        part = part.drop(columns=[c for c in ("row", "shard", "offset", "label") if c in part])
        part.insert(0, "row", np.arange(start, start + n, dtype=np.int64))
        part.insert(1, "shard", np.full(n, self._shard, dtype=np.int64))
        part.insert(2, "offset", np.arange(n, dtype=np.int64))
        part.insert(3, "label", labels.astype(np.int64))
        atomic_write(_part_file(self.root, self._shard), lambda f: part.to_parquet(f, index=False))
        self._done += n
        self._shard += 1
        self._rows = []

    def close(self) -> None:
        """Write the final (possibly short) shard, manifest.parquet, and mark meta complete."""
        if self._complete:
            return
        self._flush()
        parts = [pd.read_parquet(_part_file(self.root, s)) for s in range(self._shard)]
        if not parts:
            raise ValueError(f"feature store {self.root}: no rows were added")
        manifest = pd.concat(parts, ignore_index=True)
        atomic_write(self.root / "manifest.parquet", lambda f: manifest.to_parquet(f, index=False))
        self._write_meta(complete=True)
        self._complete = True
        for s in range(self._shard):
            _part_file(self.root, s).unlink(missing_ok=True)
        log.info(
            "feature store %s complete: %d rows in %d shards", self.root, self._done, self._shard
        )

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:  # on error keep the committed shards for resume
            self.close()


class FeatureStore:
    """Read-only view of a complete store; shards are memory-mapped lazily, per process."""

    def __init__(self, root, max_open_shards: int = 128):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no feature store at {self.root} (missing meta.json)")
        self._meta = json.loads(meta_path.read_text())
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
            m = np.load(_shard_file(self.root, shard, field), mmap_mode="r")
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

    def take(self, field: str, rows) -> np.ndarray:
        """Rows `rows` of `field` (len(rows), *shape), in the given order, read shard by shard.

        Rows are sorted, grouped by shard and read with one fancy index per shard memmap, so a batch
        touches each shard once and its pages in file order.
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
        out = np.empty((len(rows), *shape), dtype=dtype)
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        shards = srt // self._shard_size
        bounds = [0, *(np.flatnonzero(np.diff(shards)) + 1).tolist(), len(srt)]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
            if lo == hi:
                continue
            shard = int(shards[lo])
            out[order[lo:hi]] = self._map(shard, field)[srt[lo:hi] - shard * self._shard_size]
        return out

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        return {k: self.get(k, idx) for k in self._meta["fields"]}

    def read_all(self, field: str) -> np.ndarray:
        """Whole `field` as one in-memory array (N, *shape); for small stores and tests."""
        n_shards = int(self._meta["num_shards"])
        return np.concatenate([np.asarray(self._map(s, field)) for s in range(n_shards)])

    def verify_meta(self, expected: dict) -> None:
        """Raise `FeatureStoreMismatch` naming every key whose value differs from `expected`."""
        mismatch = _diff(self._meta, _jsonable(expected))
        if mismatch:
            raise FeatureStoreMismatch(self.root, mismatch)
