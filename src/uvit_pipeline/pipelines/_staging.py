"""The one helper nodes share for directory outputs: a staging folder named by what goes into it.

A node that builds a directory gets its staging root from `params:paths` (conf/base/parameters.yml) and
builds into `<root>/<what>-<key>`, where the key hashes the node's inputs and settings. The same inputs
and settings give the same folder, so an interrupted build resumes there; a changed setting gives a
new folder instead of a mismatch. The returned folder is then moved into the catalog by
`DirectoryDataset` in one rename.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from uvit_pipeline._io import atomic_write_json


def identity_key(identity: Any) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def staging_dir(root: str, what: str, identity: Any) -> Path:
    """`<root>/<what>-<key>` (created), with the identity written beside it for the curious."""
    key = identity_key(identity)
    folder = Path(root) / f"{what}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(root) / f"{what}-{key}.json", identity)
    return folder


def manifest_id(manifest: pd.DataFrame) -> str:
    """Content identity of a manifest (paths, labels and file checksums)."""
    cols = [c for c in ("path", "label", "checksum", "split") if c in manifest.columns]
    h = pd.util.hash_pandas_object(manifest[cols], index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()[:16]
