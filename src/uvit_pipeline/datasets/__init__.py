"""Kedro dataset classes for the project's artifacts (directories, statistics, raw data roots)."""

from .directory import DirectoryDataset, RawDirectoryDataset
from .stats import NpzStatsDataset

__all__ = ["DirectoryDataset", "NpzStatsDataset", "RawDirectoryDataset"]
