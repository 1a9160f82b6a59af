"""Directory-valued and external catalog entries: DirectoryDataset (moved in whole, replaces only what
the project created), RawDirectoryDataset (read-only), PretrainedDataset, NotUsed, PromptFileDataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kedro.io import DatasetError, Version

from uvit_pipeline._io import MARKER
from uvit_pipeline.datasets import (
    DirectoryDataset,
    NotUsed,
    PretrainedDataset,
    PromptFileDataset,
    RawDirectoryDataset,
)


def make_dir(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "payload.txt").write_text(text)
    return path


def test_moves_in_atomically_and_replaces_its_own_directory(tmp_path):
    dst = tmp_path / "catalog" / "store"
    ds = DirectoryDataset(filepath=str(dst))
    assert not ds.exists()
    first = make_dir(tmp_path / "staging1", "one")
    ds.save(str(first))
    assert not first.exists()  # moved, not copied
    assert ds.exists() and ds.load() == str(dst)
    assert (dst / "payload.txt").read_text() == "one"
    assert (dst / MARKER).is_file()  # the project created it: a later save may replace it

    ds.save(make_dir(tmp_path / "staging2", "two"))  # replaces the old directory in one rename
    assert (dst / "payload.txt").read_text() == "two"
    assert sorted(p.name for p in dst.parent.iterdir()) == ["store"]  # no .tmp / .old leftovers

    keep = make_dir(tmp_path / "keep", "three")
    DirectoryDataset(filepath=str(dst), copy=True).save(keep)
    assert (keep / "payload.txt").read_text() == "three"  # the source stays (a staging cache)
    assert (dst / "payload.txt").read_text() == "three"


def test_never_replaces_a_directory_it_did_not_create(tmp_path):
    theirs = make_dir(tmp_path / "theirs", "someone else's")
    staged = make_dir(tmp_path / "staged", "ours")
    with pytest.raises(DatasetError, match=f"{theirs} exists and was not created by uvit_pipeline"):
        DirectoryDataset(filepath=str(theirs)).save(str(staged))
    assert (theirs / "payload.txt").read_text() == "someone else's"
    assert not (theirs / MARKER).exists() and staged.is_dir()  # nothing moved either way


def test_versions_are_kept_and_the_newest_is_loaded(tmp_path):
    root = tmp_path / "06_models" / "uvit_checkpoint"
    for i, version in enumerate(["2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"]):
        ds = DirectoryDataset(filepath=str(root), version=Version(None, version))
        ds.save(make_dir(tmp_path / f"staged{i}", f"v{i}"))
    latest = DirectoryDataset(filepath=str(root), version=Version(None, None))
    assert Path(latest.load()) == root / "2026-01-02T00.00.00.000Z" / "uvit_checkpoint"
    assert latest.location == latest.load()
    assert (Path(latest.load()) / "payload.txt").read_text() == "v1"
    pinned = DirectoryDataset(filepath=str(root), version=Version("2026-01-01T00.00.00.000Z", None))
    assert (Path(pinned.load()) / "payload.txt").read_text() == "v0"


def test_missing_entries_fail_with_the_path_unless_optional(tmp_path):
    with pytest.raises(DatasetError, match=r".*absent does not exist: run the pipeline"):
        DirectoryDataset(filepath=str(tmp_path / "absent")).load()
    assert DirectoryDataset(filepath=str(tmp_path / "absent"), optional=True).load() is None
    never_saved = DirectoryDataset(
        filepath=str(tmp_path / "versioned"), optional=True, version=Version(None, None)
    )
    assert never_saved.load() is None  # no version yet: the consuming node decides
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"expected a directory to place at .*file.txt"):
        DirectoryDataset(filepath=str(tmp_path / "dst")).save(tmp_path / "file.txt")
    assert not (tmp_path / "dst").exists()


def test_preview_reports_files_and_bytes(tmp_path):
    ds = DirectoryDataset(filepath=str(tmp_path / "store"))
    assert json.loads(ds.preview())["exists"] is False
    staged = make_dir(tmp_path / "staged", "12345")
    (staged / "sub").mkdir()
    (staged / "sub" / "more.bin").write_bytes(b"\0" * 1000)
    ds.save(staged)
    info = json.loads(ds.preview())
    marker = (tmp_path / "store" / MARKER).stat().st_size
    assert info["files"] == 3 and info["bytes"] == 5 + 1000 + marker


def test_raw_data_is_read_only(tmp_path):
    raw = RawDirectoryDataset(filepath=str(tmp_path / "imagenet"))
    with pytest.raises(DatasetError, match=f"Raw data folder '{tmp_path / 'imagenet'}' does not"):
        raw.load()
    make_dir(tmp_path / "imagenet", "data")
    assert raw.load() == str(tmp_path / "imagenet")
    staged = make_dir(tmp_path / "staged", "new")
    with pytest.raises(DatasetError, match="read-only"):
        raw.save(str(staged))
    assert (tmp_path / "imagenet" / "payload.txt").read_text() == "data" and staged.is_dir()


def test_pretrained_weights_are_references(tmp_path):
    hub = PretrainedDataset(source="stabilityai/sd-vae-ft-ema")
    assert hub.load() == "stabilityai/sd-vae-ft-ema" and hub.exists()  # the loader fetches it
    missing = PretrainedDataset(source=str(tmp_path / "uvit.pth"))
    assert not missing.exists()
    with pytest.raises(DatasetError, match=r"uvit.pth' does not exist. Download it"):
        missing.load()
    (tmp_path / "uvit.pth").write_bytes(b"weights")
    assert missing.exists() and missing.load() == str(tmp_path / "uvit.pth")
    with pytest.raises(DatasetError, match="never written"):
        missing.save("anything")
    assert (tmp_path / "uvit.pth").read_bytes() == b"weights"
    with pytest.raises(DatasetError, match="needs `source`"):
        PretrainedDataset(source="")


def test_not_used_loads_as_none_and_refuses_saves():
    ds = NotUsed(reason="pixel-space experiment, no autoencoder")
    assert ds.load() is None and ds.exists()
    with pytest.raises(DatasetError, match="pixel-space experiment, no autoencoder"):
        ds.save("x")


def test_prompt_file(tmp_path):
    assert PromptFileDataset().load() is None  # no `--params prompt_file=...`
    path = tmp_path / "prompts.txt"
    path.write_text("A red bus.\n\n  A cat on a mat.  \n", encoding="utf-8")
    assert PromptFileDataset(filepath=str(path)).load() == ["A red bus.", "A cat on a mat."]
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(DatasetError, match="^prompt file .*blank.txt holds no prompts"):
        PromptFileDataset(filepath=str(tmp_path / "blank.txt")).load()
    with pytest.raises(DatasetError, match="^prompt file .*nope.txt does not exist"):
        PromptFileDataset(filepath=str(tmp_path / "nope.txt")).load()
    with pytest.raises(DatasetError, match="never written"):
        PromptFileDataset(filepath=str(path)).save(["x"])
