"""Directory-valued catalog entries: feature stores, checkpoints, samples, raw data roots, and
references to weights that live outside the project.

A node builds a directory in a staging folder (where an interrupted build resumes) and returns its
path; `DirectoryDataset.save` moves it into the catalog location in one rename, so an entry is complete
or absent, and it replaces an existing directory only if the project created it. Loading returns the
directory's path: stores are memory-mapped, checkpoints are opened by their consumer, nothing large is
read into the Kedro process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, AbstractVersionedDataset, DatasetError, Version

from uvit_pipeline._io import replace_dir
from uvit_pipeline.errors import RequestError, UserFacingError


class MissingArtefact(UserFacingError, DatasetError):
    """A directory entry (a checkpoint, a store, raw data) that is not there; the message says which
    pipeline makes it or where the data is expected."""


def _summary(path: Path) -> dict[str, Any]:
    """Files and bytes under ``path`` (what kedro-viz shows for a directory entry)."""
    n, size = 0, 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            n += 1
            size += os.path.getsize(os.path.join(root, name))
    return {"files": n, "bytes": size, "size": f"{size / 2**20:.1f} MiB"}


class DirectoryDataset(AbstractVersionedDataset[str, str]):
    """A (versionable) directory artefact: ``save(path)`` moves (or copies) a finished directory in."""

    def __init__(
        self,
        *,
        filepath: str,
        copy: bool = False,
        optional: bool = False,
        made_by: list[str] | str | None = None,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """`copy`: copy the directory in and keep the source (a cache in the staging area);
        `optional`: load a missing entry as None (the consuming node decides whether it needs it);
        `made_by`: the pipeline(s) that write the entry, named when it is missing."""
        self._copy = copy
        self._optional = optional
        self._made_by = [made_by] if isinstance(made_by, str) else list(made_by or [])
        self.metadata = metadata
        super().__init__(PurePosixPath(filepath), version)

    @property
    def location(self) -> str:
        """Where the entry is now (the newest version when versioned)."""
        return self._get_load_path().as_posix()

    def missing(self) -> MissingArtefact:
        """The error for an entry with no (version of its) directory."""
        what = f"{self._filepath}" + (" has no version yet" if self._version else " does not exist")
        make = (
            "run "
            + " or ".join(f"`kedro run --pipelines {name}`" for name in self._made_by)
            + " (with this run's --env) first"
            if self._made_by
            else "run the pipeline that writes it first"
        )
        return MissingArtefact(f"{what}: {make}.")

    def load(self) -> str | None:
        try:
            path = Path(self._get_load_path().as_posix())
        except DatasetError as err:  # versioned and no version saved yet
            if self._optional:
                return None
            raise self.missing() from err
        if not path.is_dir():
            if self._optional:
                return None
            raise self.missing()
        return str(path)

    def save(self, data: str | os.PathLike) -> None:
        try:
            replace_dir(data, self._get_save_path().as_posix(), copy=self._copy)
        except (FileExistsError, NotADirectoryError) as err:
            raise DatasetError(str(err)) from err

    def _exists(self) -> bool:
        return Path(self._get_load_path().as_posix()).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version, "copy": self._copy}

    def preview(self) -> str:
        """kedro-viz: size on disk and number of files of the newest version."""
        try:
            path = Path(self._get_load_path().as_posix())
        except DatasetError:
            return json.dumps({"filepath": str(self._filepath), "exists": False})
        if not path.is_dir():
            return json.dumps({"filepath": str(path), "exists": False})
        return json.dumps({"filepath": str(path), **_summary(path)})


class RawDirectoryDataset(DirectoryDataset):
    """A user's raw data root (an ImageNet/COCO/CIFAR/CelebA folder as downloaded): read-only."""

    def missing(self, layout: str = "") -> MissingArtefact:
        path = Path(self._get_load_path().as_posix())
        expected = f" It is expected as {layout}." if layout else ""
        return MissingArtefact(
            f"Raw data folder '{path}' does not exist.{expected} Put the data set there, or point "
            f"the experiment at it with `--params data_root=/path/to/dataset` (docs/data.md)."
        )

    def load(self) -> str:
        path = Path(self._get_load_path().as_posix())
        if not path.is_dir():
            raise self.missing()
        return str(path)

    def save(self, data) -> None:
        raise DatasetError(
            f"Raw data at '{self._filepath}' is read-only: uvit_pipeline never writes, moves or "
            "deletes anything under a raw data root."
        )


class PretrainedDataset(AbstractDataset[str, str]):
    """Weights that live outside the project, read-only: a Hugging Face id (``id`` or ``id:subfolder``)
    or a local file/directory. Loading returns the reference; the consuming node loads the weights
    (checking a local path exists first, with an error that names the entry)."""

    def __init__(self, *, source: str, metadata: dict[str, Any] | None = None) -> None:
        if not source:
            raise DatasetError("PretrainedDataset needs `source` (a Hugging Face id or a path)")
        self._source = str(source)
        self.metadata = metadata

    @property
    def location(self) -> str:
        return self._source

    def _is_local(self) -> bool:
        s = self._source
        return s.startswith((".", "/", "~", "data/")) or Path(s).suffix in {".pth", ".pt", ".npz"}

    def load(self) -> str:
        if self._is_local() and not Path(self._source).expanduser().exists():
            raise DatasetError(
                f"'{self._source}' does not exist. Download it (docs/latent.md and "
                "docs/text_to_image.md list the official files) or point this catalog entry at "
                "your copy."
            )
        return self._source

    def save(self, data) -> None:
        raise DatasetError(f"'{self._source}' is an external input and is never written")

    def _exists(self) -> bool:
        return not self._is_local() or Path(self._source).expanduser().exists()

    def _describe(self) -> dict[str, Any]:
        return {"source": self._source}


class NotUsed(AbstractDataset[None, None]):
    """An input this experiment does not have (e.g. no autoencoder in pixel space): loads as None."""

    def __init__(self, *, reason: str, metadata: dict[str, Any] | None = None) -> None:
        self._reason = reason
        self.metadata = metadata

    def load(self) -> None:
        return None

    def save(self, data) -> None:
        raise DatasetError(f"this experiment has no such entry ({self._reason})")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"reason": self._reason}


class BadPromptFile(RequestError, DatasetError):
    """A prompt file that does not exist or holds no prompts (Kedro passes a `DatasetError` through
    unwrapped)."""


class PromptFileDataset(AbstractDataset[list, list]):
    """A prompt file (UTF-8 text, one prompt per line) given with `--params prompt_file=...`, read
    and checked by `encoders.text.read_prompts`; no file given loads as None."""

    def __init__(self, *, filepath: str | None = None, metadata: dict[str, Any] | None = None):
        self._filepath = filepath
        self.metadata = metadata

    def load(self) -> list[str] | None:
        if not self._filepath:
            return None
        # encoders.text imports transformers (seconds): only a run given a prompt file pays it
        from uvit_pipeline.encoders.text import read_prompts

        try:
            return read_prompts(self._filepath)
        except (OSError, ValueError) as err:
            raise BadPromptFile(str(err)) from err

    def save(self, data) -> None:
        raise DatasetError("the prompt file is an input and is never written")

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath}
