"""Reference statistics (`mu`, `sigma`) in the official `fid_stats_*.npz` format.

Statistics the project computes are saved with their sha256 in a sibling `<name>.sha256` (written
after the .npz); loading checks it and refuses a damaged file, naming it. Official files carry none.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractVersionedDataset, DatasetError, Version

from uvit_pipeline._io import atomic_write, atomic_write_text, sha256_file
from uvit_pipeline.metrics.fid import load_stats


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
        recorded = path.with_name(path.name + ".sha256")
        if path.is_file() and recorded.is_file():
            if sha256_file(path) != recorded.read_text(encoding="utf-8").strip():
                raise DatasetError(
                    f"Statistics file '{path}' is damaged: its sha256 differs from the one recorded "
                    f"in {recorded.name} when it was written. Delete the folder {path.parent} and "
                    "re-run the pipeline that computes it (fid_reference or import_pretrained)."
                )
        try:
            mu, sigma = load_stats(path)  # checks keys, shapes, no pickles
        except FileNotFoundError as err:
            raise DatasetError(
                f"Statistics file '{path}' does not exist. Official `fid_stats_*.npz` files come with "
                "the U-ViT release (docs/latent.md, docs/text_to_image.md); computed ones are written "
                "by the fid_reference pipeline."
            ) from err
        except ValueError as err:
            raise DatasetError(str(err)) from err
        with np.load(path, allow_pickle=False) as f:
            # Official fid_stats files carry no network name: they are Inception pool3 statistics.
            network = str(f["network"]) if "network" in f.files else "inception_v3_fid"
        return {"mu": mu, "sigma": sigma, "network": network}

    def save(self, data: dict) -> None:
        arrays = {
            "mu": np.asarray(data["mu"]),
            "sigma": np.asarray(data["sigma"]),
            "network": np.asarray(data.get("network", "inception_v3_fid")),
        }
        path = atomic_write(self._get_save_path().as_posix(), lambda f: np.savez(f, **arrays))
        atomic_write_text(path.with_name(path.name + ".sha256"), sha256_file(path) + "\n")

    def _exists(self) -> bool:
        return Path(self._get_load_path().as_posix()).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
