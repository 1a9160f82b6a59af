"""Reference statistics (`mu`, `sigma`) in the official `fid_stats_*.npz` format."""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractVersionedDataset, DatasetError, Version


class NpzStatsDataset(AbstractVersionedDataset[dict, dict]):
    """Loads/saves ``{"mu": (d,), "sigma": (d, d), "network": str}``; official files have no `network`."""

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.metadata = metadata
        super().__init__(PurePosixPath(filepath), version)

    def load(self) -> dict:
        path = Path(self._get_load_path().as_posix())
        with np.load(path, allow_pickle=False) as f:
            missing = {"mu", "sigma"} - set(f.files)
            if missing:
                raise DatasetError(
                    f"'{path}' is not a statistics file: keys {sorted(missing)} missing."
                )
            out = {"mu": f["mu"], "sigma": f["sigma"]}
            # Official fid_stats files carry no network name: they are Inception pool3 statistics.
            out["network"] = str(f["network"]) if "network" in f.files else "inception_v3_fid"
        return out

    def save(self, data: dict) -> None:
        path = Path(self._get_save_path().as_posix())
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(
            buf,
            mu=np.asarray(data["mu"]),
            sigma=np.asarray(data["sigma"]),
            network=np.asarray(data.get("network", "inception_v3_fid")),
        )
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)

    def _exists(self) -> bool:
        return Path(self._get_load_path().as_posix()).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
