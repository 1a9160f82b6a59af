"""The one helper nodes share for directory outputs: a staging folder named by what goes into it.

A node that builds a directory gets its staging root from `params:paths` (conf/base/parameters.yml) and
builds into `<root>/<what>-<key>`, where the key hashes the node's inputs and settings. The same inputs
and settings give the same folder, so an interrupted build resumes there; a changed setting gives a
new folder instead of a mismatch. The returned folder is then moved into the catalog by
`DirectoryDataset` in one rename.

The run that builds a folder holds a lock on it (`hold_for_run`, `.<name>.run.lock`) until the Kedro
run ends (`hooks.RunLocks` releases it), so the node's own work, its outputs' saves into the catalog
and any post-processing are covered: a second run of the same step with the same inputs is refused
with `LockedError` naming the running one (pid and host) instead of racing it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from uvit_pipeline._io import StagingLock, atomic_write_json


def identity_key(identity: Any) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


_held: dict[Path, StagingLock] = {}


def hold_for_run(folder: str | Path, what: str = "staging folder") -> StagingLock:
    """Lock `folder` for the rest of this Kedro run (re-entrant within the process); a folder held
    by another process raises `LockedError` naming it (after `StagingLock.wait_s`)."""
    folder = Path(folder).resolve()
    lock = _held.get(folder)
    if lock is None or not lock.held:
        lock = _held[folder] = StagingLock(folder, what, kind="run").acquire()
    return lock


def release_run_locks() -> None:
    """Release every lock taken by `hold_for_run` (at the end of a Kedro run)."""
    while _held:
        _held.popitem()[1].release()


def staging_dir(root: str, what: str, identity: Any) -> Path:
    """`<root>/<what>-<key>` (created and held for the run), with the identity written beside it."""
    key = identity_key(identity)
    folder = Path(root) / f"{what}-{key}"
    hold_for_run(folder, f"{what} staging folder")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(root) / f"{what}-{key}.json", identity)
    return folder


def manifest_id(manifest: pd.DataFrame) -> str:
    """Content identity of a manifest (paths, labels and file checksums)."""
    cols = [c for c in ("path", "label", "checksum", "split") if c in manifest.columns]
    h = pd.util.hash_pandas_object(manifest[cols], index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()[:16]
