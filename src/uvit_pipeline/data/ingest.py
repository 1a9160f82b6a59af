"""Raw data set ingestion: list, validate by decoding, and tabulate (manifest + report).

Layouts and rules: docs/data.md, docs/reference.md §7 (COCO: data/coco.py).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .._io import read_regular_file
from .cifar import read_cifar10, read_cifar10_batches
from .images import DEFAULT_MAX_PIXELS, ImageError, decode_rgb, read_bytes

__all__ = [
    "CHECKSUM_ALGORITHM",
    "IMAGE_EXTENSIONS",
    "MANIFEST_COLUMNS",
    "REPORT_COLUMNS",
    "read_cifar10",
    "read_cifar10_batches",
    "scan_celeba",
    "scan_imagenet_folder",
]

log = logging.getLogger(__name__)

# §7.1: extensions accepted by the official loader (compared case-insensitively).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif"})
CHECKSUM_ALGORITHM = "sha1"  # of the raw file bytes; also in manifest.attrs["checksum_algorithm"]
MANIFEST_COLUMNS = ["path", "label", "class_name", "width", "height", "checksum"]
REPORT_COLUMNS = ["path", "reason"]
CELEBA_SPLITS = {"train": 0, "valid": 1, "test": 2, "all": None}  # list_eval_partition.txt codes


@dataclass(frozen=True)
class _Item:
    """One file to validate: manifest path (posix, relative to root) + label info."""

    rel: str
    abspath: str
    label: int
    class_name: str
    extra: tuple = ()


def _default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def _check(item: _Item, max_pixels: int | None) -> tuple[_Item, tuple | str]:
    """Read, hash and fully decode one file -> (item, (w, h, checksum)) or (item, reason)."""
    try:
        data = read_bytes(item.abspath, max_pixels)
        img = decode_rgb(data, item.abspath, max_pixels)
    except ImageError as e:
        return item, e.reason
    return item, (img.width, img.height, hashlib.new(CHECKSUM_ALGORITHM, data).hexdigest())


def _parallel_ordered(
    items: Iterable[_Item], workers: int, max_pixels: int | None
) -> Iterator[tuple[_Item, tuple | str]]:
    """Map `_check` over `items` with a bounded in-flight window, yielding in input order."""
    window = max(1, workers) * 8  # bounds memory: at most this many decoded images alive
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL/hashlib release the GIL
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(_check, item, max_pixels))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _validate(
    items: list[_Item],
    workers: int | None,
    progress: bool,
    desc: str,
    extra_cols: list[str],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Validate `items` in parallel; returns (manifest, report rows)."""
    workers = _default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if max_pixels is not None and (isinstance(max_pixels, bool) or int(max_pixels) < 1):
        raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    rows, report = [], []
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress, smoothing=0.05)
    for item, res in _parallel_ordered(items, workers, max_pixels):
        bar.update(1)
        if isinstance(res, str):
            report.append((item.rel, res))
        else:
            rows.append((item.rel, item.label, item.class_name, *res, *item.extra))
    bar.close()
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + extra_cols)
    manifest = manifest.astype({"label": "int64", "width": "int64", "height": "int64"})
    manifest.attrs["checksum_algorithm"] = CHECKSUM_ALGORITHM
    return manifest, report


def _report_frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=REPORT_COLUMNS, dtype=object)


def _link_problem(path: str) -> str | None:
    """Why symlink `path` cannot be followed ("dangling symlink", "symlink loop", ...), or None."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return "dangling symlink"
        return f"unreadable: {e.strerror or e}"
    return None


def _missing_reason(path: Path) -> str:
    return (_link_problem(str(path)) if path.is_symlink() else None) or "missing file"


class _Walker:
    """Sorted recursive listing that follows symlinks but lists every directory once.

    Links may point anywhere (data sets are often assembled from links to other disks); each
    directory is identified by (device, inode), so a link back to an ancestor is reported as a
    cycle and a second link to an already listed directory as a duplicate, instead of recursing
    until `OSError: Too many levels of symbolic links`. Dangling links and loops are reported.
    """

    def __init__(self, root: Path, report: list[tuple[str, str]], above: tuple[Path, ...] = ()):
        self.root, self.report = root, report
        self.seen: dict[tuple[int, int], str] = {}
        self.ancestors: set[tuple[int, int]] = set()
        for d in above:  # folders above the walked ones: a link back to them is a cycle too
            key = self._key(d)
            self.seen[key] = self._rel(d)
            self.ancestors.add(key)

    @staticmethod
    def _key(path: Path) -> tuple[int, int]:
        st = os.stat(path)
        return st.st_dev, st.st_ino

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() or "."

    def walk(self, folder: Path) -> Iterator[Path]:
        """All files under `folder`, sorted by name at every level (the §7.1 listing order)."""
        key = self._key(folder)
        if key in self.seen:
            first = self.seen[key]
            what = "symlink cycle" if key in self.ancestors else "duplicate directory"
            self.report.append((self._rel(folder), f"{what}: same directory as {first}"))
            return
        self.seen[key] = self._rel(folder)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            self.report.append((self._rel(folder), f"unreadable directory: {e.strerror or e}"))
            return
        self.ancestors.add(key)
        for entry in entries:
            problem = _link_problem(entry.path) if entry.is_symlink() else None
            if problem:
                self.report.append((self._rel(Path(entry.path)), problem))
            elif entry.is_dir():
                yield from self.walk(Path(entry.path))
            else:
                yield Path(entry.path)
        self.ancestors.discard(key)


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} does not exist or is not a directory")


def scan_imagenet_folder(
    root: str | os.PathLike,
    split: str = "train",
    workers: int | None = None,
    progress: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan `root/<split>/<class>/**` (ImageNet layout) -> (manifest, report).

    Label = position of the class folder in the sorted list of ALL class folders of the split
    (= wnid order, so indices match the official ones even if a folder is empty or fully rejected).
    Symlinks are followed; loops, cycles, dangling links are reported (`_Walker`).
    """
    root = Path(root)
    _require_dir(root, "ImageNet root")
    split_dir = root / split
    _require_dir(split_dir, f"ImageNet split {split!r}")
    entries = sorted(os.scandir(split_dir), key=lambda e: e.name)
    report: list[tuple[str, str]] = []
    classes = []
    for e in entries:
        problem = _link_problem(e.path) if e.is_symlink() else None
        if problem:
            report.append((f"{split}/{e.name}", problem))
        elif e.is_dir():
            classes.append(e.name)
        else:
            report.append((f"{split}/{e.name}", "file outside class folder"))
    walker = _Walker(root, report, above=(root, split_dir))
    items: list[_Item] = []
    counts = {}
    for label, name in enumerate(classes):
        n_before = len(items)
        for f in walker.walk(split_dir / name):
            rel = f.relative_to(root).as_posix()
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                items.append(_Item(rel, str(f), label, name))
            else:
                report.append((rel, "non-image extension"))
        counts[name] = len(items) - n_before
        folder = f"{split}/{name}"
        if counts[name] == 0 and not (report and report[-1][0] == folder):  # not yet reported
            report.append((folder, "empty class folder"))
    if not items:
        raise ValueError(f"no image files found under {split_dir}")
    log.info("ImageNet %s: %d candidate files in %d classes", split, len(items), len(classes))
    manifest, bad = _validate(items, workers, progress, f"scan {split}", [], max_pixels)
    report.extend(bad)
    if manifest.empty:
        raise ValueError(f"no valid images under {split_dir} ({len(bad)} files rejected)")
    valid = manifest["class_name"].value_counts()
    for name in classes:
        if counts[name] > 0 and valid.get(name, 0) == 0:
            report.append((f"{split}/{name}", "class folder has no valid images"))
    manifest.attrs["num_classes"] = len(classes)
    return manifest, _report_frame(report)


def _find_celeba_dir(root: Path) -> Path:
    # Accept both `root/` and torchvision's `root/celeba/` layout.
    for cand in (root, root / "celeba"):
        if (cand / "list_eval_partition.txt").is_file() and (cand / "img_align_celeba").is_dir():
            return cand
    raise FileNotFoundError(
        f"CelebA not found under {root}: expected img_align_celeba/ and list_eval_partition.txt"
    )


def scan_celeba(
    root: str | os.PathLike,
    split: str = "train",
    workers: int | None = None,
    progress: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan aligned CelebA (`img_align_celeba/*.jpg` + `list_eval_partition.txt`) for `split`.

    CelebA is unconditional here (§7.2): label 0, class_name "celeba"; order = partition file.
    """
    if split not in CELEBA_SPLITS:
        raise ValueError(f"split must be one of {sorted(CELEBA_SPLITS)}, got {split!r}")
    root = Path(root)
    _require_dir(root, "CelebA root")
    base = _find_celeba_dir(root)
    want = CELEBA_SPLITS[split]
    items, report = [], []
    part_file = base / "list_eval_partition.txt"
    text = read_regular_file(part_file).decode("utf-8", errors="replace")  # never a FIFO
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in {"0", "1", "2"}:
            raise ValueError(f"{part_file}:{lineno}: expected '<file> <0|1|2>', got {line!r}")
        if want is not None and int(parts[1]) != want:
            continue
        f = base / "img_align_celeba" / parts[0]
        rel = f.relative_to(root).as_posix()
        if f.exists() and not f.is_dir():  # a FIFO or device is reported by the read
            items.append(_Item(rel, str(f), 0, "celeba"))
        else:
            report.append((rel, _missing_reason(f)))
    if not items:
        raise ValueError(f"no CelebA images for split {split!r} under {base}")
    manifest, bad = _validate(items, workers, progress, f"scan celeba {split}", [], max_pixels)
    if manifest.empty:
        raise ValueError(f"no valid CelebA images for split {split!r} under {base}")
    return manifest, _report_frame(report + bad)
