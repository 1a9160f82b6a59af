"""Crash-safe file operations shared by the library and the Kedro datasets.

Everything the project writes goes through these helpers: a file is written to a temporary sibling,
flushed and fsynced, then renamed onto its final name, so a reader sees the old content or the new one,
never half of it; a directory is built in a temporary sibling and renamed into place the same way.
`StagingLock` keeps two runs from writing the same staging folder at once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from uvit_pipeline.errors import UserFacingError

# A folder holding this file was created by the project; only such folders may be replaced or removed.
MARKER = ".uvit-pipeline"


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory (directory entries survive a power cut after a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(binary_file)`` on a temporary sibling of ``path``, fsync it, rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise named_os_error(err, path) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def writing(path: str | os.PathLike):
    """Errors of the writes inside name `path`: an `OSError` without a file name gets it, and a
    full disk reported by a library in its own exception type (safetensors, torch) becomes an
    `OSError(ENOSPC)` naming `path`."""
    try:
        yield
    except OSError as err:
        raise named_os_error(err, path) from err
    except Exception as err:
        text = str(err)
        if "No space left on device" in text or "os error 28" in text or "StorageFull" in text:
            raise named_os_error(OSError(errno.ENOSPC, text), path) from err
        raise


def named_os_error(err: OSError, path: str | os.PathLike) -> OSError:
    """`err` naming `path` when it names no file (a full disk then says which file it was writing)."""
    if err.filename is not None or err.errno is None:
        return err
    if err.errno == errno.ENOSPC:
        return OSError(err.errno, "No space left on device (free space, then re-run)", str(path))
    return OSError(err.errno, err.strerror or str(err), str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """JSON with sorted keys and indentation, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


class UnreadableFile(UserFacingError, ValueError):
    """A file the project wrote (or reads) that does not parse or fails its checksum; the message
    names the file and says what to do."""

    def __init__(self, path: str | os.PathLike, problem: str, remedy: str = ""):
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}" + (f". {remedy}" if remedy else ""))


def read_json(path: str | os.PathLike, remedy: str = "") -> Any:
    """`json.loads` of a UTF-8 file (a BOM is accepted); a parse error names the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UnreadableFile(path, f"is not valid JSON ({err})", remedy) from None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


CHECKSUMS = "checksums.json"


def write_checksums(folder: str | os.PathLike, names: list[str] | None = None) -> Path:
    """Record the sha256 of `names` (default: every non-hidden file directly in `folder`) in
    `<folder>/checksums.json`, written atomically; `verify_checksums` checks them on load."""
    folder = Path(folder)
    if names is None:
        names = sorted(
            p.name
            for p in folder.iterdir()
            if p.is_file() and p.name != CHECKSUMS and not p.name.startswith(".")  # marker
        )
    sums = {name: sha256_file(folder / name) for name in names}
    return atomic_write_json(folder / CHECKSUMS, {"sha256": sums})


def verify_checksums(folder: str | os.PathLike, remedy: str, required: bool = False) -> bool:
    """Check every file listed in `<folder>/checksums.json`; a missing or changed file raises
    `UnreadableFile` naming it and `remedy`. Returns False (nothing to check) when the folder has
    no checksums file, unless `required`."""
    folder = Path(folder)
    listing = folder / CHECKSUMS
    if not listing.is_file():
        if required:
            raise UnreadableFile(listing, "is missing", remedy)
        return False
    sums = read_json(listing, remedy).get("sha256")
    if not isinstance(sums, dict):
        raise UnreadableFile(listing, "holds no 'sha256' mapping", remedy)
    for name, want in sums.items():
        path = folder / name
        if not path.is_file():
            raise UnreadableFile(path, f"is missing (listed in {CHECKSUMS})", remedy)
        if sha256_file(path) != want:
            raise UnreadableFile(
                path, f"is damaged: its sha256 differs from the one recorded in {CHECKSUMS}", remedy
            )
    return True


class InputRefused(UserFacingError, ValueError):
    """An input file that is not read: not a regular file, or larger than the limit."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file (symlinks followed), at most `max_bytes`. A FIFO, socket or
    device (also behind a symlink) is refused before it is opened for reading, so nothing blocks or
    reads without end; a file above `max_bytes` is refused on its size before reading. Raises
    `InputRefused` (or `OSError` for a file that cannot be opened)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise InputRefused(path, f"not a regular file: {_kind(st.st_mode)}")
    # O_NONBLOCK: should the path become a FIFO after the check, open() still returns at once.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InputRefused(path, f"not a regular file: {_kind(st.st_mode)}")
        if max_bytes is not None and st.st_size > max_bytes:
            raise InputRefused(path, f"file too large: {st.st_size} bytes > {max_bytes}")
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # it grew while being read
        raise InputRefused(path, f"file too large: more than {max_bytes} bytes")
    return data


def entry_load_error(entry: str, source: str | os.PathLike, err: BaseException) -> RuntimeError:
    """The error for weights a catalog entry names that fail to load for any reason besides a
    missing download (a damaged file: `UnpicklingError`, a safetensors header error, ...)."""
    first = (str(err).splitlines() or [""])[0]
    return RuntimeError(
        f"catalog entry `{entry}`: cannot load {source} ({type(err).__name__}: {first}). Its files "
        "are damaged or incomplete: download them again, or point the entry at an intact copy"
    )


def is_project_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory the project created (it holds the marker file)."""
    return (Path(path) / MARKER).is_file()


def mark_project_dir(path: str | os.PathLike) -> Path:
    """Write the marker that says the project created ``path`` (so it may later replace it)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / MARKER, "created by uvit_pipeline; may be replaced by it\n")
    return path


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike, *, copy: bool = False) -> Path:
    """Put directory ``src`` at ``dst`` in one rename (copy first when asked or across filesystems).

    An existing ``dst`` is replaced only if the project created it (it holds `MARKER`); anything
    else at ``dst`` stops with an error naming the path. The result carries the marker.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise NotADirectoryError(f"expected a directory to place at {dst}, got {src}")
    if dst.exists() and not is_project_dir(dst):
        raise FileExistsError(
            f"{dst} exists and was not created by uvit_pipeline (no {MARKER} file); refusing to "
            "replace it. Move it away or point the catalog entry elsewhere."
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if copy:
        shutil.copytree(src, tmp, symlinks=True)
    else:
        try:
            os.replace(src, tmp)
        except OSError:  # another filesystem: copy, then drop the source
            shutil.copytree(src, tmp, symlinks=True)
            shutil.rmtree(src)
    mark_project_dir(tmp)
    for p in tmp.iterdir():
        if p.is_file():
            fsync_path(p)
    fsync_path(tmp)
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(tmp, dst)
    fsync_path(dst.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dst


def remove_project_dir(path: str | os.PathLike) -> None:
    """Delete ``path`` if the project created it; refuse (naming the path) otherwise."""
    path = Path(path)
    if not path.exists():
        return
    if not is_project_dir(path):
        raise FileExistsError(f"{path} was not created by uvit_pipeline; refusing to delete it")
    shutil.rmtree(path)


class LockedError(UserFacingError, RuntimeError):
    """Another live process holds the lock; the message names its pid and host."""


class StagingLock:
    """An exclusive, advisory lock on a staging folder, held for the life of a run.

    The lock is `fcntl.flock` on `<parent>/.<name>.lock`, a file NEXT TO the folder (so a finished
    folder can be renamed away while still locked, and the folder itself holds only results). The
    kernel releases it when the holder dies (also on `kill -9`), so a crashed run never leaves a
    stale lock; the file records the holder's pid and host for the error message of a second run.
    The lock file is never deleted: unlinking a lock file lets two later runs lock different inodes.
    A flock belongs to one open file, so a second `StagingLock` on the same folder conflicts even in
    the same process (two threads, or a writer object that was never closed).
    """

    # A killed holder's lock goes only when the kernel has finished tearing the process down (tens
    # of ms after SIGKILL; seconds for a process with a GPU context), so a conflict is retried this
    # long before it is reported.
    wait_s = 10.0

    def __init__(self, folder: str | os.PathLike, what: str = "staging folder", kind: str = ""):
        """`kind` names a second, independent lock on the same folder (`.<name>.<kind>.lock`), e.g.
        the one a Kedro run holds while a library writer holds the plain one."""
        self.folder = Path(folder)
        self.what = what
        self.path = self.folder.parent / f".{self.folder.name}{'.' + kind if kind else ''}.lock"
        self._fd: int | None = None

    def acquire(self) -> StagingLock:
        import fcntl  # POSIX only: the package still imports where locks are never taken

        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.05)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown holder"
            os.close(fd)
            raise LockedError(
                f"{self.what} {self.folder} is in use by another run ({holder}; lock file "
                f"{self.path}); wait for it to finish, or stop it, before running the same step again"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __del__(self) -> None:  # a forgotten lock dies with its object, as with its process
        self.release()

    def __enter__(self) -> StagingLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
