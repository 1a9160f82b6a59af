"""Kedro dataset classes for the project's artifacts (directories, statistics, raw data, external weights)."""

from .directory import (
    DirectoryDataset,
    NotUsed,
    PretrainedDataset,
    PromptFileDataset,
    RawDirectoryDataset,
)
from .stats import NpzStatsDataset

__all__ = [
    "DirectoryDataset",
    "NotUsed",
    "NpzStatsDataset",
    "PretrainedDataset",
    "PromptFileDataset",
    "RawDirectoryDataset",
]
