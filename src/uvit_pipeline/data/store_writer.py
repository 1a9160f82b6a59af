"""The feature store's writer: streaming, resumable, one shard in memory, each shard committed
atomically with its sha256, a `StagingLock` for its life (format: store_format.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .._io import StagingLock, atomic_write, atomic_write_json, read_json
from . import store_format as fmt

log = logging.getLogger(__name__)


class FeatureStoreWriter:
    """Streaming, resumable writer; holds at most one shard in memory and the folder's lock.

    Use it as a context manager (or call `close()` / `release()`): a writer that raised, or that
    left its `with` block through an exception, keeps its committed shards and releases the lock,
    like a crashed process; a new writer on the same folder resumes.
    """

    def __init__(self, root, meta: dict, fields: dict, shard_size: int = 1024):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        clash = sorted(set(meta) & set(fmt.RESERVED_KEYS))
        if clash:
            raise ValueError(f"meta may not use reserved keys {clash}")
        self.root = Path(root)
        self.shard_size = int(shard_size)
        self.fields = fmt.normalise_fields(fields)
        self._meta = fmt.jsonable(
            {
                **meta,
                "format_version": fmt.FORMAT_VERSION,
                "fields": self.fields,
                "shard_size": self.shard_size,
            }
        )
        self._complete = False
        self._short = False  # a short shard exists: only the final shard may be short
        self._checksums: dict[str, str] = {}  # shard file name -> sha256, committed shards
        self._skipped: list[dict] = []  # skipped-input records of committed shards
        self._pending_skips: list[dict] = []
        self._lock = StagingLock(self.root, "feature store").acquire()
        try:
            self._open()
        except BaseException:
            self._lock.release()
            raise
        self._buf = {
            k: np.empty((self.shard_size, *f["shape"]), dtype=f["dtype"])
            for k, f in self.fields.items()
        }
        self._rows: list[dict] = []

    # -- opening / resume ------------------------------------------------------------------
    def _open(self) -> None:
        meta_path = self.root / "meta.json"
        if meta_path.is_file():
            disk = fmt.read_meta(self.root)
            mismatch = fmt.diff(
                {k: v for k, v in disk.items() if k not in fmt.STATE_KEYS}, self._meta
            )
            extra = set(disk) - set(self._meta) - set(fmt.STATE_KEYS)
            mismatch.update({k: (disk[k], "<missing>") for k in sorted(extra)})
            if mismatch:
                raise fmt.FeatureStoreMismatch(
                    self.root,
                    mismatch,
                    f"{self.root} holds an extraction (finished or interrupted) made with other "
                    "settings. To resume or reuse it, re-run with the original settings (the "
                    f"'store=' values); to start over with the new settings, delete {self.root}.",
                )
            self._complete = bool(disk.get("complete"))
        elif any(self.root.glob("shard-*.npy")):
            raise FileExistsError(f"{self.root} holds shards but no meta.json; refusing to mix")
        (self.root / fmt.PARTS).mkdir(parents=True, exist_ok=True)
        for tmp in [*self.root.glob(".*.tmp"), *(self.root / fmt.PARTS).glob(".*.tmp")]:
            tmp.unlink(missing_ok=True)  # leftovers of a crash mid-write
        if self._complete:
            self._shard, self._done = int(disk["num_shards"]), int(disk["num_rows"])
            return
        # A shard counts only if its manifest part (written last), its checksum file and every
        # field file exist.
        self._shard, self._done = 0, 0
        while (
            fmt.part_file(self.root, self._shard).is_file()
            and fmt.sums_file(self.root, self._shard).is_file()
            and all(fmt.shard_file(self.root, self._shard, k).is_file() for k in self.fields)
        ):
            sums = read_json(fmt.sums_file(self.root, self._shard), "Delete the staging folder")
            self._checksums.update(sums["sha256"])
            self._skipped.extend(sums["skipped"])
            n = pq.read_metadata(fmt.part_file(self.root, self._shard)).num_rows
            self._done += n
            self._shard += 1
            if n < self.shard_size:  # short shard = final shard (written by close)
                self._short = True
                break
        for stale in self.root.glob("shard-*.npy"):  # shards after the first gap are redone
            if int(stale.name.split(".")[0][len("shard-") :]) >= self._shard:
                stale.unlink()
        for stale in [
            *(self.root / fmt.PARTS).glob("*.parquet"),
            *(self.root / fmt.PARTS).glob("*.json"),
        ]:
            if int(stale.stem) >= self._shard:
                stale.unlink()
        if self._done:
            log.info(
                "resuming feature store %s at row %d (shard %d)", self.root, self._done, self._shard
            )
        self._write_meta(complete=False)

    def _write_meta(self, complete: bool, **extra) -> None:
        state = {"num_rows": self._done, "num_shards": self._shard, "complete": complete, **extra}
        text = json.dumps({**self._meta, **state}, indent=1, sort_keys=True).encode()
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.root / "meta.json", lambda f: f.write(text))

    @property
    def resume_row(self) -> int:
        """Rows committed in complete shards; feed data from this row on."""
        return self._done

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def space(self) -> int:
        """Rows that still fit into the shard being filled (a batch of this size commits it)."""
        return self.shard_size - len(self._rows)

    def last_committed(self, column: str) -> int | None:
        """Largest `column` value in the last committed shard's rows and in committed skip records.

        A producer that records its input position in `column` (of rows and skip records) and
        never lets a batch cross a shard boundary (see `space`) resumes after this position.
        """
        values = [r[column] for r in self._skipped if column in r]
        if self._shard > 0:
            part = pq.read_table(fmt.part_file(self.root, self._shard - 1))
            if column in part.column_names:
                values.extend(part.column(column).to_pylist())
        return max(values) if values else None

    # -- writing ---------------------------------------------------------------------------
    def _require_lock(self) -> None:
        if not self._lock.held:
            raise RuntimeError(
                f"this writer of {self.root} failed or was released; open a new "
                "FeatureStoreWriter to resume from the committed shards"
            )

    def _check_usable(self) -> None:
        if self._complete or self._short:
            raise RuntimeError(f"feature store {self.root} is already complete; nothing to add")
        self._require_lock()

    def skip(self, records) -> None:
        """Record inputs the producer skipped (dicts with at least `path` and `reason`).

        They are committed with the next shard and end up in `report.parquet`; meta.json's
        `num_skipped` counts them.
        """
        self._check_usable()
        if isinstance(records, pd.DataFrame):
            records = records.to_dict("records")
        for r in records:
            if not {"path", "reason"} <= set(r):
                raise ValueError(f"skip records need 'path' and 'reason', got {sorted(r)}")
        self._pending_skips.extend(fmt.jsonable(list(records)))

    def add(self, batch: dict, rows=None) -> None:
        """Append a batch: `batch[field]` arrays (B, *shape); `rows` = B manifest dicts/DataFrame."""
        self._check_usable()
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
                try:
                    self._flush()
                except BaseException:
                    self.release()  # like a crash: committed shards stay for a resume
                    raise

    def _flush(self) -> None:
        """Commit the buffered rows as shard `self._shard` (fields first, manifest part last)."""
        n = len(self._rows)
        if n == 0:
            return
        sums = {}
        for k in self.fields:
            path = fmt.shard_file(self.root, self._shard, k)
            sums[path.name] = fmt.save_npy(path, self._buf[k][:n])
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
        atomic_write_json(
            fmt.sums_file(self.root, self._shard), {"sha256": sums, "skipped": self._pending_skips}
        )
        atomic_write(
            fmt.part_file(self.root, self._shard), lambda f: part.to_parquet(f, index=False)
        )
        self._checksums.update(sums)
        self._skipped.extend(self._pending_skips)
        self._pending_skips = []
        self._done += n
        self._shard += 1
        self._rows = []

    def close(self) -> None:
        """Write the final (possibly short) shard, manifest.parquet, report.parquet, checksums,
        fingerprints and content_id, and mark meta complete; releases the lock."""
        if self._complete:
            self.release()
            return
        self._require_lock()
        try:
            self._close()
        finally:
            self.release()

    def _close(self) -> None:
        self._flush()
        parts = [pd.read_parquet(fmt.part_file(self.root, s)) for s in range(self._shard)]
        if not parts:
            raise ValueError(f"feature store {self.root}: no rows were added")
        manifest = pd.concat(parts, ignore_index=True)
        atomic_write(self.root / "manifest.parquet", lambda f: manifest.to_parquet(f, index=False))
        skipped = self._skipped + self._pending_skips
        report = pd.DataFrame(
            skipped, columns=sorted({*fmt.REPORT_COLUMNS, *(k for r in skipped for k in r)})
        )
        # path, reason first; the order must not depend on resumes (checksum files sort keys)
        report = report[
            fmt.REPORT_COLUMNS + [c for c in report.columns if c not in fmt.REPORT_COLUMNS]
        ]
        atomic_write(self.root / "report.parquet", lambda f: report.to_parquet(f, index=False))
        manifest_sha = fmt.file_sha256(self.root / "manifest.parquet")
        checksums = dict(sorted(self._checksums.items()))
        self._write_meta(
            complete=True,
            num_skipped=len(skipped),
            checksums=checksums,
            manifest_sha256=manifest_sha,
            content_id=fmt.content_id(checksums, manifest_sha),
            # Sampled blocks of every shard file: the cheap check at every training start.
            fingerprints={name: fmt.file_fingerprint(self.root / name) for name in checksums},
        )
        self._complete = True
        for s in range(self._shard):
            fmt.part_file(self.root, s).unlink(missing_ok=True)
            fmt.sums_file(self.root, s).unlink(missing_ok=True)
        log.info(
            "feature store %s complete: %d rows in %d shards, %d inputs skipped",
            self.root,
            self._done,
            self._shard,
            len(skipped),
        )

    def release(self) -> None:
        """Stop writing without finishing: committed shards stay for a resume; drops the lock."""
        self._lock.release()

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # on error keep the committed shards for resume
            self.release()
