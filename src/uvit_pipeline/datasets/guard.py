"""One mechanism for every catalog entry: atomic saves and named damage on load.

`guard(dataset, name)` is applied by `hooks.CatalogGuard` to each dataset the first time a run loads
or saves it, whatever its class (kedro-datasets' pandas, json, pillow, text, matplotlib datasets, or
the project's own):

- **Saves are atomic.** A dataset that writes through a local fsspec filesystem (`dataset._fs`, the
  convention of every kedro-datasets class) gets a filesystem whose write-mode `open` returns a
  handle on a temporary sibling (`.<name>.<random>.tmp`); closing it flushes, fsyncs and renames it
  onto the final name, an exception inside the `with` block (a full disk, a failed encoder) removes
  it. A failed save therefore leaves no file at all: neither a truncated newest version nor a
  half-written unversioned file. Errors name the file being written (`No space left on device: …`).
  The project's own datasets write through `_io.atomic_write` / `_io.replace_dir` already.
- **Damaged versions are named.** A load of a versioned entry (written by the project) that fails
  on a file that exists (a truncated parquet left
  by an older release, a file edited from outside) raises `DamagedVersion`: it names the catalog
  entry, the file, the parser's error, and says exactly what to do: delete the named version folder
  (the previous intact version, also named, is then the newest) or re-run the pipeline that writes
  the entry. Nothing falls back silently to older data.
"""

from __future__ import annotations

import logging
import os
import tempfile
import types
from pathlib import Path
from typing import Any

from kedro.io import DatasetError

from uvit_pipeline._io import fsync_path, named_os_error
from uvit_pipeline.errors import UserFacingError

log = logging.getLogger(__name__)

_WRITE_CHARS = set("wxa+")


class DamagedVersion(UserFacingError, DatasetError):
    """The newest version of a catalog entry exists but cannot be read."""


class AtomicWriteHandle:
    """A file opened for writing on a temporary sibling of `path`; `close()` commits it (fsync and
    rename), `discard()` (or leaving a `with` block by an exception) removes it."""

    def __init__(self, path: str | os.PathLike, mode: str = "wb", **text_kwargs: Any) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # the permissions a plain open() would give
        self._tmp = Path(tmp)
        mode = mode.replace("x", "w")
        if "b" not in mode:
            text_kwargs.setdefault("encoding", "utf-8")
        else:
            text_kwargs = {}
        self._f = os.fdopen(fd, mode, **text_kwargs)
        self._finished = False

    def __getattr__(self, name: str) -> Any:  # tell, seek, flush, fileno, closed, mode, ...
        if name.startswith("_"):  # not set yet (a failed __init__): no recursion through _f
            raise AttributeError(name)
        return getattr(self._f, name)

    @property
    def name(self) -> str:
        return str(self.path)

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            raise named_os_error(err, self.path) from err

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self._finished:
            return
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.replace(self._tmp, self.path)
        except OSError as err:
            self.discard()
            raise named_os_error(err, self.path) from err
        except BaseException:
            self.discard()
            raise
        self._finished = True
        try:
            fsync_path(self.path.parent)
        except OSError:  # some filesystems refuse fsync on a directory
            pass

    def discard(self) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            self._f.close()
        except OSError:
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicWriteHandle:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
        else:
            self.close()

    def __del__(self) -> None:  # dropped without close(): nothing is committed
        if not getattr(self, "_finished", True):
            self.discard()


class AtomicLocalFileSystem:
    """A local fsspec filesystem whose write-mode `open` is an `AtomicWriteHandle`; every other
    attribute (exists, glob, mkdirs, invalidate_cache, read-mode open, ...) is the wrapped one's."""

    def __init__(self, fs) -> None:
        self._fs = fs

    def __getattr__(self, name: str) -> Any:
        if name == "_fs":  # while unpickling (ParallelRunner): not set yet
            raise AttributeError(name)
        return getattr(self._fs, name)

    def open(self, path, mode: str = "rb", *args, **kwargs):
        if not _WRITE_CHARS & set(mode) or "a" in mode or "+" in mode:
            return self._fs.open(path, mode, *args, **kwargs)
        text = {k: kwargs[k] for k in ("encoding", "errors", "newline") if k in kwargs}
        return AtomicWriteHandle(self._fs._strip_protocol(path), mode, **text)


def is_local_fs(fs) -> bool:
    protocol = getattr(fs, "protocol", None)
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol or ())
    return bool({"file", "local"} & set(protocols))


def _versions(dataset) -> list[Path]:
    """Existing version files of a versioned dataset, newest first."""
    filepath = Path(str(dataset._filepath))
    found = [p for p in filepath.glob(f"*/{filepath.name}") if p.exists()]
    return sorted(found, key=lambda p: p.parent.name, reverse=True)


def _damage_message(name: str, dataset, path: Path, err: Exception) -> str:
    what = f"{type(err).__name__}: {err}".strip()
    older = [p for p in _versions(dataset) if p != path]
    then = (
        f"the previous version {older[0].parent.name} is then the newest"
        if older
        else "no other version exists, so re-run the pipeline that writes it"
    )
    return (
        f"catalog entry {name!r}: its newest version {path} is damaged ({what}). It was probably "
        "left by an interrupted save (a full disk or a crash under an older release) or changed "
        f"from outside. Delete the folder {path.parent} ({then}), or re-run the pipeline that "
        "writes the entry to save a new version."
    )


def _load_path(dataset) -> Path | None:
    try:
        return Path(str(dataset._get_load_path()))
    except Exception:  # no version saved yet, or not a file-backed dataset
        return None


def guard(dataset, name: str):
    """Make `dataset`'s saves atomic and its load errors name a damaged file; idempotent."""
    if dataset is None or getattr(dataset, "_uvit_guarded", False):
        return dataset
    fs = getattr(dataset, "_fs", None)
    if fs is not None and not isinstance(fs, AtomicLocalFileSystem) and is_local_fs(fs):
        dataset._fs = AtomicLocalFileSystem(fs)
    if hasattr(dataset, "_get_load_path"):
        original = dataset.load  # bound method (already wrapped by Kedro)

        def load(self):
            try:
                return original()
            except Exception as err:
                path = _load_path(self) if getattr(self, "_version", None) is not None else None
                if path is None or not path.is_file() or isinstance(err, DamagedVersion):
                    raise
                cause = err.__cause__ if isinstance(err, DatasetError) and err.__cause__ else err
                raise DamagedVersion(_damage_message(name, self, path, cause)) from err

        dataset.load = types.MethodType(load, dataset)
    dataset._uvit_guarded = True
    return dataset


__all__ = [
    "AtomicLocalFileSystem",
    "AtomicWriteHandle",
    "DamagedVersion",
    "guard",
    "named_os_error",
]
