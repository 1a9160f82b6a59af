"""Directory-valued catalog entries: feature stores, checkpoints, raw data roots.

A node builds a directory somewhere stable (a staging folder it can resume in) and returns its path; the
dataset then *moves* it into the catalog location in one rename, so a catalog entry is either complete or
absent. Loading returns the directory path as a string: stores are memory-mapped, checkpoints are opened
by the consumer, nothing large is read into the Kedro process.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError, Version


def _move_into_place(src: Path, dst: Path, copy: bool) -> None:
    """Place directory ``src`` at ``dst`` atomically (rename; copy then rename across filesystems)."""
    if not src.is_dir():
        raise DatasetError(
            f"Expected a directory to save at '{dst}', got '{src}' which is not one."
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    if copy:
        shutil.copytree(src, tmp)
    else:
        try:
            os.replace(src, tmp)
        except OSError:  # another filesystem: copy, then drop the source
            shutil.copytree(src, tmp)
            shutil.rmtree(src)
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(tmp, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class DirectoryDataset(AbstractVersionedDataset[str, str]):
    """A versionable directory artifact: ``save(path)`` moves (or copies) a finished directory in."""

    def __init__(
        self,
        *,
        filepath: str,
        copy: bool = False,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._copy = copy
        self.metadata = metadata
        super().__init__(PurePosixPath(filepath), version)

    def load(self) -> str:
        path = Path(self._get_load_path().as_posix())
        if not path.is_dir():
            raise DatasetError(
                f"Directory '{path}' does not exist: run the pipeline that writes it first."
            )
        return str(path)

    def save(self, data: str | os.PathLike) -> None:
        _move_into_place(Path(data), Path(self._get_save_path().as_posix()), self._copy)

    def _exists(self) -> bool:
        return Path(self._get_load_path().as_posix()).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version, "copy": self._copy}


class RawDirectoryDataset(DirectoryDataset):
    """A raw data root (an ImageNet/COCO/CIFAR/CelebA folder as downloaded); loading checks it exists."""

    def load(self) -> str:
        path = Path(self._get_load_path().as_posix())
        if not path.is_dir():
            raise DatasetError(
                f"Raw data folder '{path}' does not exist. Point the catalog entry (or `--params "
                f"data.root=...` where the environment interpolates it) at the downloaded data set."
            )
        return str(path)
